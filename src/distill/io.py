"""The distilled set on disk: a ``.npz`` anyone can read with plain NumPy.

Arrays:
  ``images``  (k, 784) float32, on the pixel scale of the data ([0, 1] for real images)
  ``labels``  (k,) integers, or (k, num_classes) soft targets
  ``l2reg``   scalar: the inner regularization to train the evaluation model with
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from distill import checks


@dataclasses.dataclass(frozen=True)
class DistilledSet:
    images: np.ndarray
    labels: np.ndarray
    l2reg: float


def validate(images, labels, l2reg, *, num_classes: int = 10) -> DistilledSet:
    """Check shapes, dtypes and values; raise ``ValueError`` naming what is wrong."""
    images = checks.images(images, "images")
    labels = checks.labels(labels, "labels", num_classes=num_classes, count=len(images))
    l2reg = checks.positive_number(l2reg, "l2reg")
    return DistilledSet(images=images.astype(np.float32), labels=labels, l2reg=l2reg)


def save_distilled(path, images, labels, l2reg, **metadata) -> Path:
    """Write a distilled set atomically: a temporary file beside ``path``, then a rename.

    A crash or a kill during the write leaves the previous ``path`` (if any)
    untouched: readers see either the old file or the new one, never half of
    one. The data are flushed to disk before the rename, and the rename
    after it. A write killed half-way can leave its hidden temporary file
    (``.NAME.*.tmp``) beside ``path``; it is safe to delete. Extra keyword
    arguments are stored as additional arrays (e.g. the loss history).
    """
    distilled = validate(images, labels, l2reg)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the file to write, e.g. "
                                f"{path / 'distilled.npz'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, images=distilled.images, labels=distilled.labels,
                     l2reg=np.float32(distilled.l2reg), **metadata)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
        _sync_folder(path.parent)
    except BaseException:
        # Interrupted or failed before the rename: the old file stays, the
        # partial one goes.
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def _sync_folder(folder: Path) -> None:
    """Flush the rename itself to disk, so that a power cut keeps the new file."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on this platform (e.g. Windows): the rename stands
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_distilled(path) -> DistilledSet:
    """Read and validate a distilled set written by :func:`save_distilled`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            contents = {name: arrays[name] for name in arrays.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        # ValueError: not a zip archive at all (NumPy then takes it for a pickle).
        raise ValueError(f"{path} is not a readable .npz file ({error})") from error
    missing = {"images", "labels", "l2reg"} - set(contents)
    if missing:
        raise ValueError(f"{path} is not a distilled set: it lacks {sorted(missing)}")
    images, labels, l2reg = contents["images"], contents["labels"], contents["l2reg"]
    return validate(images, labels, l2reg)
