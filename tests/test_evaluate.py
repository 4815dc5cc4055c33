import jax
import numpy as np
import pytest

from distill import distillation, evaluate, model, profiling


def test_confusion_matrix_counts_pairs():
    counts = evaluate.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert counts.sum() == 6


@pytest.mark.parametrize("true, predicted, message", [
    ([0, 1], [0], r"same length.*\(2,\).*\(1,\)"),
    ([0, 3], [0, 1], r"true labels.*0\.\.2.*3"),
    ([0, 1], [-1, 1], r"predicted labels.*0\.\.2.*-1"),
])
def test_confusion_matrix_rejects_bad_labels(true, predicted, message):
    with pytest.raises(ValueError, match=message):
        evaluate.confusion_matrix(true, predicted, num_classes=3)


def test_mean_and_spread_uses_the_sample_standard_deviation():
    assert evaluate.mean_and_spread([0.5, 0.7]) == "60.0% ± 14.1%"
    assert evaluate.mean_and_spread([0.881]) == "88.1%"
    assert evaluate.mean_and_spread([0.8809, 0.8812]) == "88.11% ± 0.02%"
    with pytest.raises(ValueError, match=r"non-empty.*\(0,\)"):
        evaluate.mean_and_spread([])


def test_random_subsets_differ_by_seed_and_are_ordered_by_class(toy_dataset):
    images_0, labels_0 = evaluate.random_real_subset(toy_dataset.train, 2, seed=0)
    images_1, _ = evaluate.random_real_subset(toy_dataset.train, 2, seed=1)
    np.testing.assert_array_equal(labels_0, np.repeat(np.arange(10), 2))
    assert not np.array_equal(images_0, images_1)
    accuracies = evaluate.random_subset_accuracies(toy_dataset.train, toy_dataset.test, 2, 0.1,
                                                   seeds=[1, 0], use_cache=False)
    # One accuracy per seed, in the order of the seeds: the model trained on that subset.
    assert accuracies.shape == (2,)
    assert accuracies[1] == evaluate.test_accuracy(images_0, labels_0, 0.1, toy_dataset.test)


def test_measure_compiled_returns_the_output_and_refuses_zero_repeats():
    # Its working memory is checked where it varies: the hypergradient-cost test below.
    x = jax.numpy.ones((200, 200))
    cost = profiling.measure_compiled(lambda a: (a @ a).sum(), x, repeats=2)
    assert float(cost.output) == 200 * 200 * 200
    with pytest.raises(ValueError, match="repeats.*0"):
        profiling.measure_compiled(lambda a: a, x, repeats=0)


def test_baselines_from_the_cache_equal_fresh_ones(monkeypatch, tmp_path, toy_dataset):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    train, test = toy_dataset.train, toy_dataset.test
    fresh = evaluate.random_subset_accuracies(train, test, 2, 0.1, range(3), use_cache=False)
    first = evaluate.random_subset_accuracies(train, test, 2, 0.1, range(3))
    cached = evaluate.random_subset_accuracies(train, test, 2, 0.1, range(3))
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(cached, fresh)
    assert len(list((tmp_path / "results").glob("random-subsets-*.npz"))) == 1
    W = evaluate.all_data_model(train, 1e-2, tol=1e-5)
    W_fresh = evaluate.all_data_model(train, 1e-2, tol=1e-5, use_cache=False)
    np.testing.assert_allclose(W, W_fresh, rtol=1e-6)
    assert evaluate.all_data_model(train, 1e-3, tol=1e-5).shape == (20, 10)
    assert len(list((tmp_path / "results").glob("all-data-model-*.npz"))) == 2


def test_exact_outer_loss_is_the_loss_of_the_trained_model(toy_dataset):
    from distill import model

    train = toy_dataset.train
    images, labels = train.images[::40], train.labels[::40]
    W, _ = model.fit_logistic_regression(images, labels, 0.1, tol=1e-6)
    expected = float(model.data_loss(W, train.images, train.labels))
    assert evaluate.exact_outer_loss(images, labels, 0.1, train) == pytest.approx(expected)


@pytest.mark.parametrize("method", ["implicit", "unrolled"])
def test_hypergradient_cost_runs_the_requested_iterations(toy_dataset, method):
    import jax.numpy as jnp

    train = toy_dataset.train
    images = jnp.asarray(train.images[::40])
    labels = jnp.arange(10)
    few = profiling.hypergradient_cost(images, labels, train.images, train.labels,
                                       iterations=5, method=method, repeats=1)
    many = profiling.hypergradient_cost(images, labels, train.images, train.labels,
                                        iterations=200, method=method, repeats=1)
    assert few.output.shape == images.shape
    if method == "unrolled":
        assert many.temp_bytes > few.temp_bytes  # every iterate is stored
    else:
        assert many.temp_bytes == few.temp_bytes
    with pytest.raises(ValueError, match="method.*'forward'"):
        profiling.hypergradient_cost(images, labels, train.images, train.labels,
                                     iterations=5, method="forward")


def test_following_the_test_accuracy_records_every_step(toy_dataset):
    follow = evaluate.FollowTestAccuracy(toy_dataset.test)
    result = distillation.distill(toy_dataset.train.images, toy_dataset.train.labels,
                                  distillation.DistillConfig(steps=3), progress=False,
                                  callback=follow)
    assert len(follow.accuracies) == len(follow.weight_norms) == result.steps + 1
    assert follow.accuracies[-1] == model.accuracy(result.inner_params, toy_dataset.test.images,
                                                   toy_dataset.test.labels)
    assert follow.weight_norms[-1] == pytest.approx(float(np.linalg.norm(result.inner_params)))
    assert follow.weight_norms[0] < follow.weight_norms[-1]  # the model grows as the images learn


def test_functions_measured_side_by_side_give_their_outputs_and_refuse_bad_arguments():
    x = jax.numpy.ones((200, 200))
    costs = profiling.measure_compiled_side_by_side(
        {"product": lambda a: (a @ a).sum(), "sum": lambda a: a.sum()}, x, repeats=3)
    assert list(costs) == ["product", "sum"]
    assert float(costs["product"].output) == 200 * 200 * 200
    assert float(costs["sum"].output) == 200 * 200
    with pytest.raises(ValueError, match="functions"):
        profiling.measure_compiled_side_by_side({}, x)
    with pytest.raises(ValueError, match="repeats.*0"):
        profiling.measure_compiled_side_by_side({"sum": lambda a: a.sum()}, x, repeats=0)
    # Arguments of its own for each function; their sizes from the same analysis.
    costs = profiling.measure_compiled_side_by_side(
        {"small": jax.numpy.sum, "large": jax.numpy.sum}, repeats=1,
        arguments={"small": (jax.numpy.ones(10),), "large": (jax.numpy.ones(1000),)})
    assert (float(costs["small"].output), float(costs["large"].output)) == (10, 1000)
    assert (costs["small"].argument_bytes, costs["large"].argument_bytes) == (40, 4000)
    with pytest.raises(ValueError, match=r"arguments must name the same functions.*\['sum'\]"):
        profiling.measure_compiled_side_by_side({"sum": jax.numpy.sum}, x,
                                                arguments={"other": (x,)})
    with pytest.raises(ValueError, match="not both"):
        profiling.measure_compiled_side_by_side({"sum": jax.numpy.sum}, x,
                                                arguments={"sum": (x,)})
