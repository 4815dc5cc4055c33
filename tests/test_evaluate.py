import jax
import numpy as np
import pytest

from distill import evaluate, profiling


def test_confusion_matrix_counts_pairs():
    counts = evaluate.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert counts.sum() == 6


@pytest.mark.parametrize("true, predicted, message", [
    ([0, 1], [0], "same length"),
    ([0, 3], [0, 1], "true labels must lie in 0..2"),
    ([0, 1], [-1, 1], "predicted labels must lie in 0..2"),
])
def test_confusion_matrix_rejects_bad_labels(true, predicted, message):
    with pytest.raises(ValueError, match=message):
        evaluate.confusion_matrix(true, predicted, num_classes=3)


def test_mean_and_spread_uses_the_sample_standard_deviation():
    assert evaluate.mean_and_spread([0.5, 0.7]) == "60.0% ± 14.1%"
    assert evaluate.mean_and_spread([0.881]) == "88.1%"
    assert evaluate.mean_and_spread([0.8809, 0.8812]) == "88.11% ± 0.02%"
    with pytest.raises(ValueError, match="non-empty"):
        evaluate.mean_and_spread([])


def test_random_subsets_differ_by_seed_and_are_ordered_by_class(toy_dataset):
    images_0, labels_0 = evaluate.random_real_subset(toy_dataset.train, 2, seed=0)
    images_1, _ = evaluate.random_real_subset(toy_dataset.train, 2, seed=1)
    np.testing.assert_array_equal(labels_0, np.repeat(np.arange(10), 2))
    assert not np.array_equal(images_0, images_1)
    accuracies = evaluate.random_subset_accuracies(toy_dataset.train, toy_dataset.test, 2, 0.1,
                                                   seeds=[0, 1, 2])
    assert accuracies.shape == (3,) and np.all((0 <= accuracies) & (accuracies <= 1))


def test_measure_compiled_reports_time_memory_and_output():
    x = jax.numpy.ones((200, 200))
    cost = profiling.measure_compiled(lambda a: (a @ a).sum(), x, repeats=2)
    assert float(cost.output) == 200 * 200 * 200
    assert cost.compile_seconds > 0 and cost.run_seconds > 0 and cost.temp_bytes >= 0
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        profiling.measure_compiled(lambda a: a, x, repeats=0)
