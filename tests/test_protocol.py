"""The evaluation protocol: a ConvNet trained from scratch on a set, tested on real data."""

import dataclasses

import jax
import numpy as np
import pytest

from distill import protocol
from tests.conftest import make_toy_dataset

#: The protocol, shrunk so that a network trains in a second or two.
SMALL = protocol.Protocol(epochs=40, batch_size=8, width=8, learning_rate=0.05)


@pytest.fixture(scope="module")
def blobs():
    """Ten well separated classes of MNIST's shape, 4 training and 10 test images each."""
    return make_toy_dataset(num_features=784, per_class=4, seed=1)


def test_the_defaults_are_the_published_protocol():
    assert dataclasses.asdict(protocol.Protocol()) == dict(
        epochs=300, batch_size=256, learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
        augment=True, width=128, depth=3)


@pytest.mark.parametrize("options, message", [
    (dict(epochs=0), "epochs.*0"),
    (dict(batch_size=2.5), "batch_size.*2.5"),
    (dict(learning_rate=-0.1), "learning_rate.*-0.1"),
    (dict(momentum=float("nan")), "momentum.*nan"),
])
def test_bad_settings_are_refused_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        protocol.Protocol(**options)


def test_standardization_is_the_training_pixels_mean_and_deviation(blobs):
    mean, std = protocol.standardization(blobs)
    assert mean == pytest.approx(float(blobs.train.images.mean()), rel=1e-6)
    assert std == pytest.approx(float(blobs.train.images.std()), rel=1e-5)


def test_a_network_trained_on_a_separable_set_learns_it_and_generalizes(blobs):
    """Whole batches (5 of 8) or a short last one (3 of 12, then 4): the set is learned."""
    standardize = protocol.standardization(blobs)
    for batch_size in (8, 12):  # 12 leaves a last batch of 4 images (40 = 3 * 12 + 4)
        params, losses = protocol.train_convnet(
            blobs.train.images, blobs.train.labels, standardize=standardize,
            protocol=dataclasses.replace(SMALL, batch_size=batch_size))
        assert losses.shape == (SMALL.epochs,)
        assert losses[-5:].mean() < 0.1 * losses[0]
        assert protocol.convnet_accuracy(params, blobs.train.images, blobs.train.labels,
                                         standardize=standardize) == 1.0
        assert protocol.convnet_accuracy(params, blobs.test.images, blobs.test.labels,
                                         standardize=standardize, batch_size=7) >= 0.9


def test_a_seed_gives_one_network_and_another_seed_another(blobs):
    standardize = protocol.standardization(blobs)

    def train(seed):
        params, _ = protocol.train_convnet(blobs.train.images, blobs.train.labels,
                                           standardize=standardize, seed=seed,
                                           protocol=dataclasses.replace(SMALL, epochs=3))
        return params["head"]["weight"]

    np.testing.assert_array_equal(train(0), train(0))
    assert not np.allclose(train(0), train(1))


def test_soft_labels_are_the_targets_of_the_cross_entropy(blobs):
    """Uniform soft labels: the best the network can do is predict them, a loss of log 10."""
    uniform = np.full((len(blobs.train.labels), 10), 0.1, np.float32)
    _, losses = protocol.train_convnet(blobs.train.images, uniform,
                                       standardize=protocol.standardization(blobs),
                                       protocol=SMALL)
    assert losses[-1] == pytest.approx(np.log(10), abs=1e-3)
    _, hard_losses = protocol.train_convnet(blobs.train.images, blobs.train.labels,
                                            standardize=protocol.standardization(blobs),
                                            protocol=SMALL)
    assert hard_losses[-1] < 0.1


def test_test_accuracies_are_one_per_seed_and_read_back_from_the_cache(blobs, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    small = dataclasses.replace(SMALL, epochs=20)
    accuracies = protocol.test_accuracies(blobs.train.images, blobs.train.labels, blobs,
                                          seeds=(0, 1), protocol=small, progress=False)
    assert accuracies.shape == (2,) and accuracies.min() >= 0.9
    assert len(list(tmp_path.rglob("convnet-protocol-*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr(protocol, "train_convnet", fail)
    np.testing.assert_array_equal(
        protocol.test_accuracies(blobs.train.images, blobs.train.labels, blobs, seeds=(0, 1),
                                 protocol=small, progress=False), accuracies)


@pytest.mark.parametrize("labels, message", [
    (np.arange(40) % 11, r"labels must lie in 0..9.*10"),
    (np.zeros(39, int), "40 images but 39 labels"),
    (np.full((40, 10), 0.5, np.float32), "probabilities"),
])
def test_bad_labels_are_refused_naming_them(blobs, labels, message):
    with pytest.raises(ValueError, match=message):
        protocol.train_convnet(blobs.train.images, labels, standardize=(0.5, 0.3),
                               protocol=SMALL)


def test_images_with_nan_are_refused_before_training(blobs):
    images = blobs.train.images.copy()
    images[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        protocol.train_convnet(images, blobs.train.labels, standardize=(0.5, 0.3),
                               protocol=SMALL)


def test_a_diverging_training_is_reported_with_its_epoch(blobs):
    with pytest.raises(FloatingPointError, match="epoch"):
        protocol.train_convnet(blobs.train.images, blobs.train.labels, standardize=(0.5, 0.3),
                               protocol=dataclasses.replace(SMALL, learning_rate=1e6,
                                                            epochs=5))
