import numpy as np
import pytest

from distill import data
from tests.conftest import requires_mnist


def test_to_flat_float_scales_and_flattens():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)[..., None]  # (1, 2, 2, 1)
    flat = data.to_flat_float(images)
    assert flat.shape == (1, 4) and flat.dtype == np.float32
    np.testing.assert_allclose(flat, [[0.0, 1.0, 0.2, 0.4]], rtol=1e-6)


def test_to_flat_float_rejects_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        data.to_flat_float(np.zeros((2, 28, 28), dtype=np.float32))


def test_unknown_dataset_name_is_refused():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'.*fashion_mnist.*mnist"):
        data.load_dataset("cifar10")


def test_manual_dir_unset_means_download(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.manual_dir("mnist") is None


def test_manual_dir_names_missing_files(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / data.RAW_FILES[0]).write_bytes(b"")
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.manual_dir("mnist", tmp_path)
    message = str(error.value)
    for name in data.RAW_FILES[1:]:
        assert name in message
    assert str(tmp_path / "mnist") in message and data.DATA_DIR_ENV in message


def test_manual_dir_is_per_dataset(tmp_path):
    for name in ("mnist", "fashion_mnist"):
        (tmp_path / name).mkdir()
        for file in data.RAW_FILES:
            (tmp_path / name / file).write_bytes(b"")
    assert data.manual_dir("fashion_mnist", tmp_path) == tmp_path / "fashion_mnist"
    assert data.manual_dir("mnist", tmp_path) == tmp_path / "mnist"


def test_failed_download_says_where_to_put_files(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    def offline_load(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(tfds, "load", offline_load)
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.load_dataset("fashion_mnist", use_cache=False)
    message = str(error.value)
    assert "ConnectionError" in message and "DIR/fashion_mnist/" in message
    assert all(name in message for name in data.RAW_FILES)


def _fake_arrays(n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28, 1), dtype=np.uint8),
        "test_labels": np.arange(n_test) % 10,
    }


def test_cache_is_written_then_used_and_rebuilt_when_damaged(monkeypatch, tmp_path):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path))
    calls = []

    def fake_tfds(name, data_dir):
        calls.append(name)
        return _fake_arrays()

    monkeypatch.setattr(data, "_load_with_tfds", fake_tfds)
    first = data.load_dataset("mnist")
    second = data.load_dataset("mnist")
    assert calls == ["mnist"]
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert first.train.images.shape == (6, 784) and first.test.labels.dtype == np.int32
    assert first.num_classes == 10 and first.num_features == 784

    cache_file, = tmp_path.glob("mnist-*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # truncate it
    third = data.load_dataset("mnist")
    assert calls == ["mnist", "mnist"]
    np.testing.assert_array_equal(first.test.images, third.test.images)


# Known class counts of the real datasets: a wrong or partial read cannot match them.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@requires_mnist
def test_both_datasets_prepared_offline_in_one_tfds_folder(tmp_path):
    """From the original files, through TFDS, into a fresh TFDS data folder.

    MNIST first, then Fashion-MNIST: their files share names, and TFDS once
    built Fashion-MNIST from MNIST's images that way (a shared extract folder).
    """
    mnist = data._load_with_tfds("mnist", None, tfds_data_dir=tmp_path)
    fashion = data._load_with_tfds("fashion_mnist", None, tfds_data_dir=tmp_path)
    for arrays in (mnist, fashion):
        assert arrays["train_images"].shape == (60_000, 28, 28, 1)
        assert arrays["test_images"].shape == (10_000, 28, 28, 1)
        assert arrays["train_images"].dtype == np.uint8
    assert np.bincount(mnist["train_labels"]).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(fashion["train_labels"]).tolist() == [6000] * 10
    assert np.bincount(fashion["test_labels"]).tolist() == [1000] * 10


@requires_mnist
def test_load_dataset_gives_flat_floats():
    dataset = data.load_dataset("mnist")
    assert dataset.train.images.shape == (60_000, 784)
    assert dataset.test.images.shape == (10_000, 784)
    assert dataset.train.images.dtype == np.float32
    assert dataset.train.images.min() == 0.0 and dataset.train.images.max() == 1.0
    assert np.bincount(dataset.train.labels).tolist() == MNIST_TRAIN_COUNTS
