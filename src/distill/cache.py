"""A small on-disk cache for results that several chapters need.

Each entry is a ``.npz`` of arrays under ``<cache dir>/results/``, named by a
hash of everything the result depends on: a description of the computation,
its parameters and a fingerprint of the data. Change any of them and the
entry is computed again; nothing is ever looked up by name alone.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from distill import data
from distill.atomic import write_atomically

#: Bump when a cached computation changes its meaning, so old entries are ignored.
RESULTS_FORMAT = 1

_fingerprints: dict[int, tuple[object, str]] = {}


def fingerprint(array) -> str:
    """A hash of an array's shape, dtype and every value (remembered per array object)."""
    remembered = _fingerprints.get(id(array))
    if remembered is not None and remembered[0] is array:
        return remembered[1]
    values = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{values.shape}{values.dtype}".encode())
    digest.update(memoryview(values).cast("B"))
    _fingerprints[id(array)] = (array, digest.hexdigest())
    return digest.hexdigest()


def results_dir() -> Path:
    return data.cache_dir() / "results"


def cached(kind: str, key: dict, compute, *, enabled: bool = True) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of arrays), or the copy saved by an earlier call with the same key.

    ``key`` must hold everything the result depends on, as JSON-serializable
    values (use :func:`fingerprint` for arrays).
    """
    if not enabled:
        return compute()
    text = json.dumps({"kind": kind, "format": RESULTS_FORMAT, **key}, sort_keys=True)
    path = results_dir() / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.npz"
    try:
        with np.load(path) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # absent or damaged: compute it again
    result = {name: np.asarray(value) for name, value in compute().items()}
    write_atomically(path, lambda file: np.savez(file, **result))
    return result
