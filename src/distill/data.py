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
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "DISTILL_DATA_DIR"
CACHE_DIR_ENV = "DISTILL_CACHE_DIR"

#: The original distribution files of each dataset (same names for both).
RAW_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

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

# Bump when the cache layout changes, so stale files are never read.
_CACHE_FORMAT = 1


class DatasetUnavailableError(RuntimeError):
    """Neither a download nor the offline files could provide the dataset."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: ``images`` (n, 784) float32 in [0, 1], ``labels`` (n,) int32."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return self.train.images.shape[1]


def check_dataset_name(name: str) -> str:
    if name not in CLASS_NAMES:
        raise ValueError(
            f"unknown dataset {name!r}: expected one of {sorted(CLASS_NAMES)}"
        )
    return name


def to_flat_float(images: np.ndarray) -> np.ndarray:
    """uint8 images of any trailing shape -> (n, pixels) float32 in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixel values, got dtype {images.dtype}")
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def manual_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the offline files of ``name``, or None if none is set.

    ``data_dir`` defaults to the ``DISTILL_DATA_DIR`` environment variable.
    Raises :class:`DatasetUnavailableError` when the folder is set but does not
    hold the four original files.
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
    return folder


def offline_instructions(name: str) -> str:
    files = "\n".join(f"    {f}" for f in RAW_FILES)
    return (
        f"To use {name!r} without network access, put its four original files\n"
        f"{files}\n"
        f"in a folder DIR/{name}/ and set the environment variable "
        f"{DATA_DIR_ENV}=DIR (in this project's checkouts, DIR is ../shared/data)."
    )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "distill")


def _cache_path(name: str) -> Path:
    return cache_dir() / f"{name}-v{_CACHE_FORMAT}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as arrays:
            loaded = {key: arrays[key] for key in arrays.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # a damaged cache is rebuilt, never used
    expected = {f"{split}_{kind}" for split in ("train", "test") for kind in ("images", "labels")}
    if set(loaded) != expected or any(
        len(loaded[f"{split}_images"]) != len(loaded[f"{split}_labels"]) for split in ("train", "test")
    ):
        return None
    return loaded


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename, so a crash never leaves half a file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez(f, **arrays)
    os.replace(f.name, path)


def tfds_offline_kwargs(name: str, data_dir: str | os.PathLike | None,
                        extract_dir: str | os.PathLike) -> dict:
    """Extra ``tfds.load`` arguments that prepare ``name`` from the offline files.

    Empty when no offline folder is set (TFDS then downloads as usual).
    ``extract_dir`` must be a fresh folder for each preparation.
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


def _load_with_tfds(name: str, data_dir: str | os.PathLike | None,
                    tfds_data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Both splits through ``tfds.load``, read in one batch each."""
    import tensorflow_datasets as tfds  # imported lazily: it pulls in TensorFlow

    with tempfile.TemporaryDirectory(prefix=f"distill-{name}-extract-") as extract_dir:
        kwargs = tfds_offline_kwargs(name, data_dir, extract_dir)
        try:
            train, test = tfds.load(
                name, split=["train", "test"], batch_size=-1, as_supervised=True,
                data_dir=tfds_data_dir, **kwargs
            )
        except Exception as error:  # TFDS raises many types for a failed download
            raise DatasetUnavailableError(
                f"tfds.load({name!r}) failed: {type(error).__name__}: {error}\n"
                + offline_instructions(name)
            ) from error
    (train_images, train_labels), (test_images, test_labels) = (
        tfds.as_numpy(train), tfds.as_numpy(test)
    )
    return {
        "train_images": train_images, "train_labels": train_labels,
        "test_images": test_images, "test_labels": test_labels,
    }


def load_dataset(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Dataset:
    """Load ``name`` ("mnist" or "fashion_mnist") as flat float arrays.

    Args:
      name: the TFDS dataset name.
      data_dir: folder with the offline files (one subfolder per dataset);
        defaults to the ``DISTILL_DATA_DIR`` environment variable.
      use_cache: read and write the array cache in ``DISTILL_CACHE_DIR``.
    """
    check_dataset_name(name)
    path = _cache_path(name)
    arrays = _read_cache(path) if use_cache else None
    if arrays is None:
        arrays = _load_with_tfds(name, data_dir)
        if use_cache:
            _write_cache(path, arrays)

    def split(prefix: str) -> Split:
        return Split(
            images=to_flat_float(arrays[f"{prefix}_images"]),
            labels=np.asarray(arrays[f"{prefix}_labels"], dtype=np.int32),
        )

    return Dataset(name=name, train=split("train"), test=split("test"),
                   class_names=CLASS_NAMES[name])
