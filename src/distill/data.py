"""Image datasets as flat float arrays: the data layer of the helper package.

``load_dataset("mnist")`` returns the training and test splits as
``(n, 784)`` float32 arrays with pixels in [0, 1] and integer labels.

Where the data comes from, in order:

1. a cache of plain arrays written by an earlier call (``DISTILL_CACHE_DIR``,
   by default ``~/.cache/distill``), which loads in well under a second;
2. ``tfds.load`` read in one batch (``batch_size=-1``), not example by example.
   With network access (a laptop, Colab) TFDS downloads the files itself.
   Without it, set ``DISTILL_DATA_DIR`` to a folder holding one subfolder per
   dataset (``mnist/``, ``fashion_mnist/``) with the four original ``.gz``
   files; TFDS then prepares the dataset from them through its *manual
   directory*, exactly as if it had downloaded them.

When neither works, :class:`DatasetUnavailableError` says which files to put
where.

Nothing partial or damaged is ever used:

* each offline file is checked against its known size and sha256
  (:data:`RAW_FILE_CHECKSUMS`, the values TFDS registers) before TFDS sees
  it; a missing, truncated or altered file raises
  :class:`DatasetUnavailableError` naming the file, what is wrong with it and
  where to get a fresh copy. A file is hashed once per process (tens of
  milliseconds), and never when the array cache is warm;
* the arrays TFDS returns are checked (split sizes :data:`SPLIT_SIZES`, uint8
  28x28 images, labels in 0..9, as many labels as images) before they are
  cached; a failure raises :class:`DatasetUnavailableError` naming the
  prepared TFDS folder to delete, as does a TFDS read error in that folder;
* a cache file that fails the same checks, or is damaged, is rebuilt, never
  used.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from distill.atomic import write_atomically

DATA_DIR_ENV = "DISTILL_DATA_DIR"
CACHE_DIR_ENV = "DISTILL_CACHE_DIR"

#: The original distribution files of each dataset (same names for both).
RAW_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclasses.dataclass(frozen=True)
class RawFile:
    """An original distribution file: where it comes from and what it must be.

    Attributes:
      url: where to download a fresh copy.
      size: its size in bytes.
      sha256: its sha256 digest, in hexadecimal.
    """

    url: str
    size: int  # bytes
    sha256: str


_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

#: Known size and sha256 of each original file, as registered by TFDS
#: (``tensorflow_datasets/url_checksums/{mnist,fashion_mnist}.txt``).
RAW_FILE_CHECKSUMS: dict[str, dict[str, RawFile]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": RawFile(
            _MNIST_URL + "train-images-idx3-ubyte.gz", 9912422,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": RawFile(
            _MNIST_URL + "train-labels-idx1-ubyte.gz", 28881,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": RawFile(
            _MNIST_URL + "t10k-images-idx3-ubyte.gz", 1648877,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": RawFile(
            _MNIST_URL + "t10k-labels-idx1-ubyte.gz", 4542,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": RawFile(
            _FASHION_URL + "train-images-idx3-ubyte.gz", 26421880,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": RawFile(
            _FASHION_URL + "train-labels-idx1-ubyte.gz", 29515,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": RawFile(
            _FASHION_URL + "t10k-images-idx3-ubyte.gz", 4422102,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": RawFile(
            _FASHION_URL + "t10k-labels-idx1-ubyte.gz", 5148,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
}

#: Datasets this helper knows, with their class names.
CLASS_NAMES = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}

IMAGE_SHAPE = (28, 28)
NUM_FEATURES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

#: Number of examples in each split: fewer (or more) means a partial read.
SPLIT_SIZES: dict[str, dict[str, int]] = {
    name: {"train": 60_000, "test": 10_000} for name in CLASS_NAMES
}

_ARRAY_KEYS = tuple(f"{split}_{kind}" for split in ("train", "test")
                    for kind in ("images", "labels"))

# Bump when the cache layout changes, so stale files are never read.
_CACHE_FORMAT = 1


class DatasetUnavailableError(RuntimeError):
    """Neither a download nor the offline files could provide the dataset.

    The message says what went wrong and what to do: which offline files to
    put where, which file to replace, or which prepared TFDS folder to delete.
    """


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset; ``len(split)`` is its number of examples.

    Attributes:
      images: (n, 784) float32 pixels in [0, 1].
      labels: (n,) int32 classes.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset as :func:`load_dataset` returns it.

    Attributes:
      name: the TFDS name (``"mnist"`` or ``"fashion_mnist"``).
      train: the training :class:`Split` (60,000 examples).
      test: the test :class:`Split` (10,000 examples).
      class_names: the name of each class, indexed by label.
    """

    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """The number of classes.

        Returns:
          ``len(class_names)``.
        """
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        """The pixels per image.

        Returns:
          The width of ``train.images`` (784 for 28 x 28 images).
        """
        return self.train.images.shape[1]


def check_dataset_name(name: str) -> str:
    """Check that ``name`` is a dataset this helper knows (a key of :data:`CLASS_NAMES`).

    Args:
      name: the dataset's name.

    Returns:
      ``name``, unchanged.

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if name not in CLASS_NAMES:
        raise ValueError(
            f"unknown dataset {name!r}: expected one of {sorted(CLASS_NAMES)}"
        )
    return name


def to_flat_float(images: np.ndarray) -> np.ndarray:
    """uint8 images of any trailing shape -> (n, pixels) float32 in [0, 1].

    Args:
      images: (n, ...) uint8 pixel values, e.g. (n, 28, 28) or (n, 28, 28, 1).

    Returns:
      (n, pixels) float32 array: the pixels divided by 255.

    Raises:
      TypeError: when the dtype is not uint8.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixel values, got dtype {images.dtype}")
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def manual_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the offline files of ``name``, checked, or None if none is set.

    Each file is checked against its known size and sha256
    (:data:`RAW_FILE_CHECKSUMS`); a file is hashed once per process.

    Args:
      name: the dataset's name.
      data_dir: the folder with one subfolder per dataset; defaults to the
        ``DISTILL_DATA_DIR`` environment variable (unset or empty: None).

    Returns:
      ``data_dir / name``, or None when no folder is set.

    Raises:
      ValueError: for an unknown dataset name.
      DatasetUnavailableError: when the folder is set but does not hold the
        four original files, or when one of them is not the original (wrong
        size or sha256: a truncated or damaged download).
    """
    check_dataset_name(name)
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    folder = Path(data_dir).expanduser() / name
    missing = [f for f in RAW_FILES if not (folder / f).is_file()]
    if missing:
        raise DatasetUnavailableError(
            f"{DATA_DIR_ENV} points at {Path(data_dir)}, but {folder} lacks "
            f"{', '.join(missing)}.\n" + offline_instructions(name)
        )
    problems = [problem for f in RAW_FILES
                if (problem := _raw_file_problem(folder / f, RAW_FILE_CHECKSUMS[name][f]))]
    if problems:
        raise DatasetUnavailableError(
            "\n".join(problems)
            + f"\nOr unset {DATA_DIR_ENV} to let TFDS download {name!r} itself."
        )
    return folder


def _raw_file_problem(path: Path, known: RawFile) -> str | None:
    """What is wrong with one offline file (with what to do), or None if it is the original."""
    stat = path.stat()
    if stat.st_size != known.size:
        what = (f"it has {stat.st_size} bytes instead of {known.size}, likely a "
                "truncated or damaged download")
    elif (digest := _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)) != known.sha256:
        what = (f"its sha256 is {digest}, not the original's (same size), likely a "
                "damaged download or another file under this name")
    else:
        return None
    return (f"The offline file {path} is not the original: {what}.\n"
            f"Replace it with a fresh copy from {known.url} "
            f"({known.size} bytes, sha256 {known.sha256})")


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file; size and mtime are in the key so a replaced file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def offline_instructions(name: str) -> str:
    """What to do to use ``name`` offline: which files to put where.

    Args:
      name: the dataset's name.

    Returns:
      A few lines of text, for error messages.
    """
    files = "\n".join(f"    {f}" for f in RAW_FILES)
    return (
        f"To use {name!r} without network access, put its four original files\n"
        f"{files}\n"
        f"in a folder DIR/{name}/ and set the environment variable "
        f"{DATA_DIR_ENV}=DIR (in this project's checkouts, DIR is ../shared/data)."
    )


def cache_dir() -> Path:
    """The folder of the array cache: ``DISTILL_CACHE_DIR``, or else ``~/.cache/distill``.

    Returns:
      The folder's path (it may not exist yet).
    """
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "distill")


def _cache_path(name: str) -> Path:
    return cache_dir() / f"{name}-v{_CACHE_FORMAT}.npz"


def _read_cache(path: Path, name: str) -> dict[str, np.ndarray] | None:
    """The cached arrays of ``name``, or None when absent, damaged or incomplete."""
    try:
        with np.load(path) as arrays:
            loaded = {key: arrays[key] for key in arrays.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # a damaged cache (zip CRC, truncation) is rebuilt, never used
    if _array_problems(name, loaded):
        return None  # so is one that is incomplete or malformed
    return loaded


def _array_problems(name: str, arrays: dict[str, np.ndarray]) -> list[str]:
    """What is wrong with the arrays of ``name`` (empty when they are complete)."""
    missing = [key for key in _ARRAY_KEYS if key not in arrays]
    if missing:
        return [f"arrays {', '.join(missing)} are missing"]
    num_classes = len(CLASS_NAMES[name])
    problems = []
    for split, expected in SPLIT_SIZES[name].items():
        images = np.asarray(arrays[f"{split}_images"])
        labels = np.asarray(arrays[f"{split}_labels"])
        if images.dtype != np.uint8:
            problems.append(f"{split} images have dtype {images.dtype}, not uint8")
        if images.ndim == 0 or images.shape[1:] not in (IMAGE_SHAPE, IMAGE_SHAPE + (1,)):
            problems.append(f"{split} images have shape {images.shape}, not "
                            f"(n, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}[, 1])")
            continue
        if len(images) != expected:
            problems.append(f"the {split} split has {len(images)} images, not {expected}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            problems.append(f"{split} labels have shape {labels.shape} and dtype "
                            f"{labels.dtype}, not (n,) integers")
            continue
        if len(labels) != len(images):
            problems.append(f"the {split} split has {len(labels)} labels for "
                            f"{len(images)} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            problems.append(f"{split} labels range over {labels.min()}..{labels.max()}, "
                            f"not within 0..{num_classes - 1}")
    return problems


def tfds_offline_kwargs(name: str, data_dir: str | os.PathLike | None,
                        extract_dir: str | os.PathLike) -> dict:
    """Extra ``tfds.load`` arguments that prepare ``name`` from the offline files.

    Args:
      name: the dataset's name.
      data_dir: the offline folder, as :func:`manual_dir` takes it (None:
        ``DISTILL_DATA_DIR``).
      extract_dir: where TFDS unpacks the files; a fresh folder for each
        preparation (MNIST and Fashion-MNIST files have the same names).

    Returns:
      ``{"download_and_prepare_kwargs": ...}`` pointing TFDS's manual
      directory at the checked offline folder; empty when no offline folder is
      set (TFDS then downloads as usual).

    Raises:
      ValueError, DatasetUnavailableError: as :func:`manual_dir`.
    """
    folder = manual_dir(name, data_dir)
    if folder is None:
        return {}
    import tensorflow_datasets as tfds

    # TFDS unpacks manual files to <extract_dir>/GZIP.<file name> and reuses
    # any file already there. MNIST and Fashion-MNIST files have the same
    # names, so a shared extract folder would build Fashion-MNIST from MNIST's
    # images: each preparation gets a folder of its own.
    return {"download_and_prepare_kwargs": {
        "download_config": tfds.download.DownloadConfig(manual_dir=str(folder),
                                                        extract_dir=str(extract_dir))
    }}


def tfds_prepared_dir(name: str, tfds_data_dir: str | os.PathLike | None = None) -> Path:
    """The folder where TFDS keeps its prepared copy of ``name``.

    Deleting the folder makes TFDS prepare the dataset afresh.

    Args:
      name: the dataset's name.
      tfds_data_dir: TFDS's data folder; defaults, as in TFDS, to
        ``TFDS_DATA_DIR`` or else ``~/tensorflow_datasets``.

    Returns:
      The folder TFDS's builder reports, or ``tfds_data_dir / name`` when the
      builder fails (a damaged folder can break it).

    Raises:
      ValueError: for an unknown dataset name.
    """
    check_dataset_name(name)
    try:
        import tensorflow_datasets as tfds

        return Path(tfds.builder(name, data_dir=tfds_data_dir).data_dir)
    except Exception:  # a damaged folder can break the builder: name the dataset's folder
        root = (tfds_data_dir or os.environ.get("TFDS_DATA_DIR")
                or Path.home() / "tensorflow_datasets")
        return Path(root).expanduser() / name


def _delete_prepared_instructions(name: str, tfds_data_dir: str | os.PathLike | None) -> str:
    return (
        f"A partially prepared or damaged TFDS copy of {name!r} may be the cause: "
        f"delete the folder {tfds_prepared_dir(name, tfds_data_dir)} and run again "
        "(TFDS then prepares it afresh)."
    )


def _load_with_tfds(name: str, data_dir: str | os.PathLike | None,
                    tfds_data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Both splits through ``tfds.load``, read in one batch each, checked complete."""
    import tensorflow_datasets as tfds  # imported lazily: it pulls in TensorFlow

    with tempfile.TemporaryDirectory(prefix=f"distill-{name}-extract-") as extract_dir:
        kwargs = tfds_offline_kwargs(name, data_dir, extract_dir)
        try:
            train, test = tfds.load(
                name, split=["train", "test"], batch_size=-1, as_supervised=True,
                data_dir=tfds_data_dir, **kwargs
            )
        except Exception as error:  # TFDS raises many types for a failed download
            prepared = tfds_prepared_dir(name, tfds_data_dir)
            # With a prepared copy on disk TFDS only reads it: a failure then
            # (DataLossError for a truncated file) most likely comes from it.
            hint = (_delete_prepared_instructions(name, tfds_data_dir) + "\n"
                    if prepared.exists() else "")
            raise DatasetUnavailableError(
                f"tfds.load({name!r}) failed: {type(error).__name__}: {error}\n"
                + hint + offline_instructions(name)
            ) from error
    (train_images, train_labels), (test_images, test_labels) = (
        tfds.as_numpy(train), tfds.as_numpy(test)
    )
    arrays = {
        "train_images": train_images, "train_labels": train_labels,
        "test_images": test_images, "test_labels": test_labels,
    }
    problems = _array_problems(name, arrays)
    if problems:
        raise DatasetUnavailableError(
            f"tfds.load({name!r}) returned an incomplete or malformed dataset: "
            + "; ".join(problems) + ".\n"
            + _delete_prepared_instructions(name, tfds_data_dir)
            + " Nothing was cached."
        )
    return arrays


def load_dataset(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Dataset:
    """Load ``name`` ("mnist" or "fashion_mnist") as flat float arrays.

    The module docstring says where the data come from (array cache, TFDS
    download, offline files) and how each source is checked.

    Args:
      name: the TFDS dataset name.
      data_dir: folder with the offline files (one subfolder per dataset);
        defaults to the ``DISTILL_DATA_DIR`` environment variable.
      use_cache: read and write the array cache in ``DISTILL_CACHE_DIR``.

    Returns:
      A :class:`Dataset`: train (60,000) and test (10,000) splits of (n, 784)
      float32 images in [0, 1] and (n,) int32 labels, and the class names.

    Raises:
      ValueError: for an unknown dataset name.
      DatasetUnavailableError: when neither TFDS nor the offline files give
        a complete, intact dataset; the message says what to do.
    """
    check_dataset_name(name)
    path = _cache_path(name)
    # A warm cache is read without touching TFDS or the offline files (no hashing).
    arrays = _read_cache(path, name) if use_cache else None
    if arrays is None:
        arrays = _load_with_tfds(name, data_dir)
        if use_cache:
            write_atomically(path, lambda file: np.savez(file, **arrays))

    def split(prefix: str) -> Split:
        return Split(
            images=to_flat_float(arrays[f"{prefix}_images"]),
            labels=np.asarray(arrays[f"{prefix}_labels"], dtype=np.int32),
        )

    return Dataset(name=name, train=split("train"), test=split("test"),
                   class_names=CLASS_NAMES[name])
