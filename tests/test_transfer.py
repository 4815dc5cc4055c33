import jax
import numpy as np
import pytest

from distill import transfer
from tests.conftest import make_toy_dataset


def test_the_mlp_learns_separable_data():
    toy = make_toy_dataset(num_features=30, per_class=20)
    params, losses = transfer.train_mlp(toy.train.images, toy.train.labels, steps=300,
                                        learning_rate=1e-2)
    assert losses[-1] < 0.1 * losses[0]
    assert transfer.mlp_accuracy(params, toy.test.images, toy.test.labels) > 0.95
    assert params["W1"].shape == (30, 128) and params["W2"].shape == (128, 10)


def test_soft_labels_equal_to_one_hot_give_the_same_model():
    toy = make_toy_dataset(num_features=30, per_class=5)
    hard, _ = transfer.train_mlp(toy.train.images, toy.train.labels, steps=20)
    soft, _ = transfer.train_mlp(toy.train.images, jax.nn.one_hot(toy.train.labels, 10),
                                 steps=20)
    np.testing.assert_allclose(hard["W1"], soft["W1"], rtol=1e-5, atol=1e-6)


def test_minibatches_differ_from_full_batches_and_are_seeded():
    toy = make_toy_dataset(num_features=30, per_class=20)
    full, _ = transfer.train_mlp(toy.train.images, toy.train.labels, steps=10)
    batch, _ = transfer.train_mlp(toy.train.images, toy.train.labels, steps=10, batch_size=16)
    again, _ = transfer.train_mlp(toy.train.images, toy.train.labels, steps=10, batch_size=16)
    assert not np.allclose(full["W1"], batch["W1"])
    np.testing.assert_array_equal(batch["W1"], again["W1"])


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros(784), np.zeros(1, int), r"images.*\(784,\)"),
    (np.zeros((3, 784)), np.zeros(2, int), "3 images but 2 labels"),
    (np.zeros((3, 784)), np.zeros((3, 2, 2)), r"labels.*\(3, 2, 2\)"),
])
def test_bad_input_is_refused(images, labels, message):
    with pytest.raises(ValueError, match=message):
        transfer.train_mlp(images, labels, steps=1)


def test_a_diverging_run_is_reported():
    images = np.full((2, 5), np.nan, np.float32)
    with pytest.raises(FloatingPointError, match="nan at step 1"):
        transfer.train_mlp(images, np.array([0, 1]), steps=3)


def test_mlp_accuracies_are_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    toy = make_toy_dataset(num_features=30, per_class=10)
    first = transfer.mlp_test_accuracies(toy.train.images, toy.train.labels, toy.test, [0, 1],
                                         steps=20)
    assert first.shape == (2,)

    def not_again(*args, **kwargs):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(transfer, "train_mlp", not_again)
    np.testing.assert_array_equal(
        transfer.mlp_test_accuracies(toy.train.images, toy.train.labels, toy.test, [0, 1],
                                     steps=20), first)
    with pytest.raises(AssertionError, match="computed again"):  # another setting: computed
        transfer.mlp_test_accuracies(toy.train.images, toy.train.labels, toy.test, [0, 1],
                                     steps=21)
