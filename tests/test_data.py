import hashlib
import os
import shutil
from pathlib import Path

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


def _accept_empty_files(monkeypatch):
    """Make empty files pass the checksum check, for tests without the real files."""
    empty = {file: data.RawFile(f"https://example.invalid/{file}", 0,
                                hashlib.sha256(b"").hexdigest()) for file in data.RAW_FILES}
    monkeypatch.setattr(data, "RAW_FILE_CHECKSUMS", {name: empty for name in data.CLASS_NAMES})


def test_manual_dir_is_per_dataset(monkeypatch, tmp_path):
    _accept_empty_files(monkeypatch)
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


def _copy_offline_files(tmp_path, name="mnist") -> Path:
    folder = tmp_path / name
    shutil.copytree(Path(os.environ[data.DATA_DIR_ENV]) / name, folder)
    for file in folder.iterdir():
        file.chmod(0o644)  # the shared originals are read-only
    return folder


@requires_mnist
def test_truncated_offline_file_is_named_with_what_to_do(tmp_path):
    folder = _copy_offline_files(tmp_path)
    damaged = folder / "train-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:1_000_000])
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.manual_dir("mnist", tmp_path)
    message = str(error.value)
    assert str(damaged) in message
    assert "1000000 bytes instead of 9912422" in message and "truncated" in message
    assert "Replace it with a fresh copy from https://storage.googleapis.com/" in message
    assert data.DATA_DIR_ENV in message
    assert "train-labels" not in message  # the intact files are not blamed


@requires_mnist
def test_same_size_file_with_a_flipped_byte_fails_the_sha256(tmp_path):
    folder = _copy_offline_files(tmp_path, "fashion_mnist")
    damaged = folder / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(damaged.read_bytes())
    content[len(content) // 2] ^= 0x01
    damaged.write_bytes(bytes(content))
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.manual_dir("fashion_mnist", tmp_path)
    message = str(error.value)
    actual = hashlib.sha256(damaged.read_bytes()).hexdigest()
    expected = data.RAW_FILE_CHECKSUMS["fashion_mnist"]["t10k-labels-idx1-ubyte.gz"].sha256
    assert str(damaged) in message and f"its sha256 is {actual}, not the original's" in message
    assert f"(5148 bytes, sha256 {expected})" in message
    assert "Replace it with a fresh copy from http://fashion-mnist" in message
    assert "train-images" not in message


def test_offline_file_is_hashed_once_per_process(monkeypatch, tmp_path):
    _accept_empty_files(monkeypatch)
    (tmp_path / "mnist").mkdir()
    for file in data.RAW_FILES:
        (tmp_path / "mnist" / file).write_bytes(b"")
    data._file_sha256.cache_clear()
    data.manual_dir("mnist", tmp_path)
    data.manual_dir("mnist", tmp_path)
    info = data._file_sha256.cache_info()
    assert (info.misses, info.hits) == (4, 4)


def test_checksum_table_equals_tfds_registered_checksums():
    import tensorflow_datasets

    registered = Path(tensorflow_datasets.__file__).parent / "url_checksums"
    for name in data.CLASS_NAMES:
        table = {}
        for line in (registered / f"{name}.txt").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                url, size, sha256, file = line.split("\t")
                table[file] = data.RawFile(url, int(size), sha256)
        assert data.RAW_FILE_CHECKSUMS[name] == table
        assert set(table) == set(data.RAW_FILES)


@requires_mnist
def test_real_offline_files_pass_the_check():
    for name in data.CLASS_NAMES:
        folder = data.manual_dir(name)
        assert folder == Path(os.environ[data.DATA_DIR_ENV]).expanduser() / name


def _fake_arrays(n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28, 1), dtype=np.uint8),
        "test_labels": np.arange(n_test) % 10,
    }


@pytest.fixture
def small_splits(monkeypatch):
    """The fake arrays' split sizes (6 and 4 images) pass the completeness check."""
    monkeypatch.setattr(data, "SPLIT_SIZES", {name: {"train": 6, "test": 4}
                                               for name in data.CLASS_NAMES})


def _fake_tfds_load(monkeypatch, arrays):
    """``tfds.load`` returning ``arrays`` as tensors, as TFDS does with batch_size=-1."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def fake_load(name, split, **kwargs):
        return [(tf.constant(arrays[f"{s}_images"]), tf.constant(arrays[f"{s}_labels"]))
                for s in split]

    monkeypatch.setattr(tfds, "load", fake_load)


def test_complete_arrays_pass_through_tfds_path(monkeypatch, tmp_path, small_splits):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    _fake_tfds_load(monkeypatch, _fake_arrays())
    dataset = data.load_dataset("mnist")
    assert len(dataset.train) == 6 and len(dataset.test) == 4
    assert len(list(tmp_path.glob("mnist-*.npz"))) == 1


@pytest.mark.parametrize("damage, reason", [
    (lambda a: a.update(train_images=a["train_images"][:5], train_labels=a["train_labels"][:5]),
     "the train split has 5 images, not 6"),
    (lambda a: a.update(test_labels=a["test_labels"][:3]),
     "the test split has 3 labels for 4 images"),
    (lambda a: a["train_labels"].__setitem__(2, 10), "train labels range over 0..10, not within 0..9"),
    (lambda a: a["test_labels"].__setitem__(0, -1), "test labels range over -1..3"),
    (lambda a: a.update(test_images=a["test_images"].astype(np.float32)),
     "test images have dtype float32, not uint8"),
    (lambda a: a.update(train_images=a["train_images"][:, :14]), "train images have shape (6, 14, 28, 1)"),
])
def test_incomplete_or_malformed_tfds_arrays_are_refused_and_not_cached(
        monkeypatch, tmp_path, small_splits, damage, reason):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    arrays = _fake_arrays()
    damage(arrays)
    _fake_tfds_load(monkeypatch, arrays)
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.load_dataset("mnist")
    message = str(error.value)
    assert reason in message and "incomplete or malformed" in message
    assert "partially prepared" in message and "delete the folder" in message
    assert str(data.tfds_prepared_dir("mnist")) in message
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())


@pytest.fixture
def tfds_calls(monkeypatch):
    """Stand in for TFDS with small fake arrays; the list of datasets it was asked for."""
    calls = []

    def fake_tfds(name, data_dir):
        calls.append(name)
        return _fake_arrays()

    monkeypatch.setattr(data, "_load_with_tfds", fake_tfds)
    return calls


def test_cache_is_written_then_used_and_rebuilt_when_damaged(monkeypatch, tmp_path, small_splits,
                                                             tfds_calls):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path))
    calls = tfds_calls
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

    content = bytearray(cache_file.read_bytes())
    content[len(content) // 2] ^= 0x01  # one flipped bit inside an array: zip CRC
    cache_file.write_bytes(bytes(content))
    fourth = data.load_dataset("mnist")
    assert calls == ["mnist", "mnist", "mnist"]
    np.testing.assert_array_equal(first.train.images, fourth.train.images)


def test_cache_with_wrong_count_is_rebuilt_not_used(monkeypatch, tmp_path, small_splits,
                                                    tfds_calls):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path))
    data.load_dataset("mnist")  # caches 6 training images
    # The expected size changes (say, a new release of the dataset): the cache is stale.
    monkeypatch.setattr(data, "SPLIT_SIZES", {name: {"train": 5, "test": 4}
                                               for name in data.CLASS_NAMES})
    fewer = _fake_arrays(n_train=5)
    monkeypatch.setattr(data, "_load_with_tfds",
                        lambda name, data_dir: tfds_calls.append(name) or fewer)
    assert len(data.load_dataset("mnist").train) == 5
    assert tfds_calls == ["mnist", "mnist"]
    assert len(data.load_dataset("mnist").train) == 5  # the rebuilt cache is used
    assert tfds_calls == ["mnist", "mnist"]


def test_warm_cache_never_checks_the_offline_files(monkeypatch, tmp_path, small_splits,
                                                   tfds_calls):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    data.load_dataset("mnist")  # warms the cache
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "no-such-folder"))

    def fail(*args, **kwargs):
        raise AssertionError("the offline files were read")

    monkeypatch.setattr(data, "manual_dir", fail)
    monkeypatch.setattr(data, "_file_sha256", fail)
    monkeypatch.setattr(data, "_load_with_tfds", fail)
    assert len(data.load_dataset("mnist").train) == 6


# Known class counts of the real datasets: a wrong or partial read cannot match them.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def prepared_mnist(tmp_path_factory):
    """MNIST prepared by TFDS from the original files in a fresh TFDS data folder."""
    tfds_data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
    return tfds_data_dir, data._load_with_tfds("mnist", None, tfds_data_dir=tfds_data_dir)


@requires_mnist
def test_both_datasets_prepared_offline_in_one_tfds_folder(prepared_mnist):
    """From the original files, through TFDS, into a fresh TFDS data folder.

    MNIST first, then Fashion-MNIST: their files share names, and TFDS once
    built Fashion-MNIST from MNIST's images that way (a shared extract folder).
    """
    tfds_data_dir, mnist = prepared_mnist
    fashion = data._load_with_tfds("fashion_mnist", None, tfds_data_dir=tfds_data_dir)
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


@requires_mnist
def test_truncated_prepared_tfds_copy_says_delete_it(prepared_mnist, tmp_path):
    """TFDS raises DataLossError on a truncated tfrecord: the message names the folder."""
    tfds_data_dir = tmp_path / "tensorflow_datasets"
    shutil.copytree(prepared_mnist[0], tfds_data_dir)
    prepared = data.tfds_prepared_dir("mnist", tfds_data_dir)
    assert prepared.parent.parent == tfds_data_dir
    record, = prepared.glob("mnist-train.tfrecord*")
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
    with pytest.raises(data.DatasetUnavailableError) as error:
        data._load_with_tfds("mnist", None, tfds_data_dir=tfds_data_dir)
    message = str(error.value)
    assert "DataLossError" in message and "truncated record" in message
    assert f"delete the folder {prepared} and run again" in message
