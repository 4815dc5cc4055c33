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


@dataclasses.dataclass(frozen=True)
class DistilledSet:
    images: np.ndarray
    labels: np.ndarray
    l2reg: float


def validate(images, labels, l2reg, *, num_classes: int = 10) -> DistilledSet:
    """Check shapes, dtypes and values; raise ``ValueError`` naming what is wrong."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 2:
        raise ValueError(f"images must be a 2-D array (k, pixels), got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be floating point, got dtype {images.dtype}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or infinite values")
    k = len(images)
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"integer labels expected, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, got values "
                             f"{labels.min()}..{labels.max()}")
    elif labels.ndim == 2:
        if labels.shape[1] != num_classes or not np.all(np.isfinite(labels)):
            raise ValueError(f"soft labels must be a finite (k, {num_classes}) array, "
                             f"got shape {labels.shape}")
    else:
        raise ValueError(f"labels must be (k,) or (k, {num_classes}), got shape {labels.shape}")
    if len(labels) != k:
        raise ValueError(f"{k} images but {len(labels)} labels")
    l2reg = float(np.asarray(l2reg))
    if not (np.isfinite(l2reg) and l2reg > 0):
        raise ValueError(f"l2reg must be a positive finite number, got {l2reg}")
    return DistilledSet(images=images.astype(np.float32), labels=labels, l2reg=l2reg)


def save_distilled(path, images, labels, l2reg, **metadata) -> Path:
    """Write a distilled set atomically (a temporary file, then a rename).

    Extra keyword arguments are stored as additional arrays (e.g. the loss history).
    """
    distilled = validate(images, labels, l2reg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".npz",
                                     delete=False) as handle:
        np.savez(handle, images=distilled.images, labels=distilled.labels,
                 l2reg=np.float32(distilled.l2reg), **metadata)
    os.replace(handle.name, path)
    return path


def load_distilled(path) -> DistilledSet:
    """Read and validate a distilled set written by :func:`save_distilled`."""
    path = Path(path)
    try:
        with np.load(path) as arrays:
            missing = {"images", "labels", "l2reg"} - set(arrays.files)
            if missing:
                raise ValueError(f"{path} is not a distilled set: it lacks {sorted(missing)}")
            images, labels, l2reg = arrays["images"], arrays["labels"], arrays["l2reg"]
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable .npz file ({error})") from error
    return validate(images, labels, l2reg)
