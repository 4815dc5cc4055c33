"""A small on-disk cache for results that several chapters need.

Each entry is a ``.npz`` of arrays under ``<cache dir>/results/``, named by a
hash of everything the result depends on: a description of the computation,
its parameters, a fingerprint of the data and the helper's own source code
(:func:`source_hash`). Change any of them and the entry is computed again;
nothing is ever looked up by name alone, and no result outlives the code
that computed it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from distill import data
from distill.atomic import write_atomically

#: The folder of this package, installed (a wheel) or editable (the checkout).
PACKAGE_DIR = Path(__file__).resolve().parent

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


@functools.lru_cache(maxsize=None)
def source_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """A hash of the source code of the helper package, part of every results key.

    Every ``.py`` file under ``package_dir`` counts, by its path relative to
    that folder and its bytes, so an edit anywhere in the helper (a
    different solver default, a fixed bug) makes every cached result miss,
    while the same code gives the same hash wherever it is installed (from
    a wheel or from the checkout).

    Args:
      package_dir: the package folder to hash; by default this package's.

    Returns:
      The hash as 32 hexadecimal digits.
    """
    package_dir = Path(package_dir)
    files = sorted(package_dir.rglob("*.py"))
    if not files:
        raise ValueError(f"package_dir={str(package_dir)!r} holds no .py file")
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        name = file.relative_to(package_dir).as_posix().encode()
        content = file.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(content)))
        digest.update(content)
    return digest.hexdigest()


def results_dir() -> Path:
    return data.cache_dir() / "results"


def cached(kind: str, key: dict, compute, *, enabled: bool = True) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of arrays), or the copy saved by an earlier call with the same key.

    ``key`` must hold everything the result depends on besides the helper's
    code, as JSON-serializable values (use :func:`fingerprint` for arrays);
    the :func:`source_hash` of the helper is added to it here.
    """
    if not enabled:
        return compute()
    text = json.dumps({"kind": kind, "source": source_hash(), **key}, sort_keys=True)
    path = results_dir() / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.npz"
    try:
        with np.load(path) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # absent or damaged: compute it again
    result = {name: np.asarray(value) for name, value in compute().items()}
    write_atomically(path, lambda file: np.savez(file, **result))
    return result
