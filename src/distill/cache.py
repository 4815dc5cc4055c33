"""A small on-disk cache for results that several chapters need.

Each entry is a ``.npz`` of arrays under ``<cache dir>/results/``, named by a
hash of everything the result depends on: a description of the computation,
its parameters, a fingerprint of the data and the helper's own source code
(:func:`source_hash`). Change any of them and the entry is computed again;
nothing is ever looked up by name alone, and no result outlives the code
that computed it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import zipfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no locks, concurrent processes may compute twice
    fcntl = None

import numpy as np

from distill import data
from distill.atomic import write_atomically

#: The folder of this package, installed (a wheel) or editable (the checkout).
PACKAGE_DIR = Path(__file__).resolve().parent

_fingerprints: dict[int, tuple[object, str]] = {}


def fingerprint(array) -> str:
    """A hash of an array's shape, dtype and every value, for the keys of :func:`cached`.

    Remembered per array object, so that fingerprinting the 60,000 training
    images again costs nothing.

    Args:
      array: a NumPy or JAX array (or anything ``np.asarray`` takes).

    Returns:
      The hash as 32 hexadecimal digits.
    """
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


#: The environment variable that puts :func:`distilled`'s runs elsewhere than the other results.
RUNS_DIR_ENV = "DISTILL_RUNS_DIR"


def results_dir() -> Path:
    """The folder of cached results.

    Returns:
      ``results/`` under :func:`distill.data.cache_dir` (it may not exist yet).
    """
    return data.cache_dir() / "results"


def runs_dir() -> Path:
    """The folder of :func:`distilled`'s runs: ``DISTILL_RUNS_DIR``, or else :func:`results_dir`.

    A folder of their own lets two processes with caches of their own share
    just these runs (``scripts/test.sh`` does, for its two executions of the
    chapters).

    Returns:
      The folder's absolute path (it may not exist yet).
    """
    folder = os.environ.get(RUNS_DIR_ENV)
    return Path(folder).expanduser().resolve() if folder else results_dir()


@functools.lru_cache(maxsize=None)
def library_versions() -> dict[str, str | None]:
    """The versions of the libraries whose numbers every cached result depends on.

    Returns:
      ``{name: version}`` for JAX, jaxlib, JAXopt, Optax and NumPy, as
      installed (None for one that is not: JAXopt is optional).
    """
    versions = {}
    for name in ("jax", "jaxlib", "jaxopt", "optax", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _numerics() -> dict:
    """Where and how JAX computes: a GPU's numbers are not a CPU's, nor float64's
    float32's, and sums split over eight devices round unlike one device's."""
    import jax

    return {"backend": jax.default_backend(), "x64": bool(jax.config.jax_enable_x64),
            "devices": jax.device_count()}


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` + ``.lock``: one process computes a result, others wait."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # absent or damaged: compute it again


def cached(kind: str, key: dict, compute, *, enabled: bool = True,
           folder: Path | None = None) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of arrays), or the copy saved by an earlier call with the same key.

    Every key also holds the :func:`source_hash` of the helper, the
    :func:`library_versions`, JAX's backend, its device count and whether it runs in 64-bit
    mode, so no result outlives the code that computed it or is read where
    other numerics would compute it. Processes that ask for the same result
    at the same time (two executions of a chapter side by side) compute it
    once: the others wait for it and read it.

    Args:
      kind: what is computed, a short name (also the file name's prefix).
      key: everything the result depends on besides the code, as
        JSON-serializable values (use :func:`fingerprint` for arrays).
      compute: ``compute() -> dict`` of arrays (or values NumPy turns into arrays).
      enabled: when False, just ``compute()``: nothing is read or written.
      folder: where the result is kept (default :func:`results_dir`).

    Returns:
      The result, as a dict of NumPy arrays.
    """
    if not enabled:
        return compute()
    text = json.dumps({"kind": kind, "source": source_hash(), "versions": library_versions(),
                       "numerics": _numerics(), **key}, sort_keys=True)
    folder = results_dir() if folder is None else Path(folder)
    path = folder / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.npz"
    result = _read(path)
    if result is not None:
        return result
    with _locked(path):
        result = _read(path)  # computed by another process while this one waited
        if result is None:
            result = {name: np.asarray(value) for name, value in compute().items()}
            write_atomically(path, lambda file: np.savez(file, **result))
    return result


def _split_over_every_device(examples: int):
    """How a run on every device split ``examples``: the device count is in the key."""
    import jax

    from distill import sharding

    return sharding.split_of(examples, jax.device_count())


def distilled(train_images, train_labels, config, *, use_cache: bool = True):
    """``distill(train_images, train_labels, config)``, computed once for the same data, config and code.

    For the runs several chapters (or two executions of one chapter) need:
    a later call with the same training data and configuration reads the
    result back from :func:`runs_dir` instead of distilling again, with its
    recorded ``seconds`` and ``compile_seconds``. The model is logistic regression
    (:func:`distill.distillation.distill` without ``objective``); no progress
    bar or callback, since a result read back has no steps to show. Inner
    solves that stopped at their iteration limit are warned about again
    when the result is read back.

    Args:
      train_images: (n, num_features) real images.
      train_labels: (n,) integer classes.
      config: the run's :class:`~distill.config.DistillConfig`.
      use_cache: read and write the on-disk cache.

    Returns:
      The run's :class:`~distill.distillation.DistillResult`.
    """
    from distill import distillation  # a layer above this module's others

    fresh = []

    def compute():
        run = distillation.distill(train_images, train_labels, config, progress=False)
        fresh.append(run)
        return dict(
            images=run.images, labels=run.labels, l2reg=run.l2reg, inner_params=run.inner_params,
            loss_history=run.loss_history, l2reg_history=run.l2reg_history,
            inner_errors=run.inner_errors, inner_not_converged=run.inner_not_converged,
            steps=run.steps, stop_reason=run.stop_reason, seconds=run.seconds,
            compile_seconds=run.compile_seconds)

    key = {"train": [fingerprint(train_images), fingerprint(train_labels)],
           "config": config.to_dict()}
    saved = cached("distilled", key, compute, enabled=use_cache, folder=runs_dir())
    if fresh:
        return fresh[0]
    if saved["inner_not_converged"]:
        distillation.warn_inner_not_converged(
            config, int(saved["inner_not_converged"]), saved["inner_errors"].tolist())
    return distillation.DistillResult(
        images=saved["images"], labels=saved["labels"], l2reg=float(saved["l2reg"]),
        loss_history=saved["loss_history"].tolist(),
        l2reg_history=saved["l2reg_history"].tolist(),
        inner_errors=saved["inner_errors"].tolist(),
        inner_not_converged=int(saved["inner_not_converged"]),
        inner_params=saved["inner_params"], steps=int(saved["steps"]),
        stop_reason=str(saved["stop_reason"]), seconds=float(saved["seconds"]),
        compile_seconds=float(saved["compile_seconds"]), config=config,
        data_split=_split_over_every_device(len(train_images)))


def network_distilled(train, config, *, standardize, image_shape=(28, 28, 1),
                      num_classes: int = 10, use_cache: bool = True):
    """``distill_for_network(train, config)``, computed once for the same data, config and code.

    The network counterpart of :func:`distilled`, kept in :func:`runs_dir`
    with it: a later call (another chapter, or the second execution of the
    same one) reads the set back instead of distilling again. No progress
    bar, callback or checkpoint; inner solves that stopped at their
    iteration limit are warned about again when the result is read back.

    Args:
      train: the real training split (:class:`distill.data.Split`).
      config: the run's :class:`~distill.config.NetworkConfig`.
      standardize: ``(mean, std)`` of the real training pixels.
      image_shape: ``(height, width, channels)`` of one image.
      num_classes: number of classes.
      use_cache: read and write the on-disk cache.

    Returns:
      The run's :class:`~distill.network_distillation.NetworkDistillResult`.
    """
    from distill import network_distillation  # a layer above this module's others

    fresh = []

    def compute():
        run = network_distillation.distill_for_network(
            train, config, standardize=standardize, image_shape=tuple(image_shape),
            num_classes=num_classes, progress=False)
        fresh.append(run)
        return dict(images=run.images, labels=run.labels, l2reg=run.l2reg,
                    loss_history=run.loss_history, inner_errors=run.inner_errors,
                    inner_not_converged=run.inner_not_converged, steps=run.steps,
                    seconds=run.seconds)

    key = {"train": [fingerprint(train.images), fingerprint(train.labels)],
           "standardize": [float(value) for value in standardize],
           "image_shape": [int(size) for size in image_shape], "num_classes": int(num_classes),
           "config": config.to_dict()}
    saved = cached("network-distilled", key, compute, enabled=use_cache, folder=runs_dir())
    if fresh:
        return fresh[0]
    if saved["inner_not_converged"]:
        network_distillation.warn_inner_not_converged(
            config, int(saved["inner_not_converged"]), saved["inner_errors"].tolist())
    return network_distillation.NetworkDistillResult(
        images=saved["images"], labels=saved["labels"], l2reg=float(saved["l2reg"]),
        loss_history=saved["loss_history"].tolist(),
        inner_errors=saved["inner_errors"].tolist(),
        inner_not_converged=int(saved["inner_not_converged"]), steps=int(saved["steps"]),
        seconds=float(saved["seconds"]), config=config,
        data_split=_split_over_every_device(config.batch_size))
