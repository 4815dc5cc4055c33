"""Fixtures and helpers shared by the unit tests.

- ``requires_mnist``: skips a test unless ``DISTILL_DATA_DIR`` holds the offline files;
- ``make_toy_dataset`` and the ``toy_dataset`` / ``toy_train`` fixtures: separable
  Gaussian blobs, small enough that a distillation takes a fraction of a second;
- ``fake_mnist``: ``data.load_dataset`` replaced by toy data of MNIST's shape, so that
  the command line runs end to end in a second;
- ``run_cli``: the command line's exit status and what it printed;
- ``small_mnist_cache``: a warm array cache of toy data of MNIST's shape, for the
  command line in a child process;
- ``x64``: JAX's 64-bit mode for the duration of one test.
"""

import os

import numpy as np
import pytest

from distill.data import Dataset, Split


def offline_data_available() -> bool:
    return bool(os.environ.get("DISTILL_DATA_DIR"))


requires_mnist = pytest.mark.skipif(
    not offline_data_available(),
    reason="set DISTILL_DATA_DIR to the offline dataset files to run tests on real data",
)


def make_toy_dataset(num_features: int = 20, per_class: int = 40, num_classes: int = 10,
                     seed: int = 0) -> Dataset:
    """Separable Gaussian blobs with pixel-like values in [0, 1]."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.0, 1.0, size=(num_classes, num_features))

    def split(n):
        labels = np.repeat(np.arange(num_classes), n).astype(np.int32)
        images = np.clip(centers[labels] + 0.1 * rng.standard_normal((len(labels), num_features)), 0, 1)
        return Split(images=images.astype(np.float32), labels=labels)

    return Dataset(name="toy", train=split(per_class), test=split(per_class // 2),
                   class_names=tuple(str(c) for c in range(num_classes)))


@pytest.fixture
def toy_dataset():
    """20 features, 40 training and 20 test images per class."""
    return make_toy_dataset()


@pytest.fixture
def toy_train():
    """A training split with 100 features: enough for the outer loss to fall a long way."""
    return make_toy_dataset(num_features=100).train


#: Options that keep a command-line run short and leave no compiled programs on disk.
FAST = ["--no-progress", "--no-compile-cache"]


@pytest.fixture
def fake_mnist(monkeypatch):
    """``data.load_dataset`` returns toy data of MNIST's shape (784 pixels, 20 per class)."""
    from distill import data

    toy = make_toy_dataset(num_features=784, per_class=20)
    monkeypatch.setattr(data, "load_dataset", lambda name, data_dir=None: toy)
    return toy


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (status, stdout, stderr)`` of ``cli.main([*FAST, *argv])``,
    argparse's exits included."""
    from distill import cli

    def run(*argv):
        capsys.readouterr()
        try:
            status = cli.main([*FAST, *map(str, argv)])
        except SystemExit as exit_info:
            status = exit_info.code
        printed = capsys.readouterr()
        return status, printed.out, printed.err

    return run


#: Split sizes of the ``small_mnist_cache`` fixture's data.
SMALL_SPLITS = {"train": 200, "test": 100}

#: A child process runs this first, so that the small cache passes the completeness check.
SMALL_SPLITS_PRELUDE = ("from distill import data\n"
                        f"data.SPLIT_SIZES = {{name: {SMALL_SPLITS!r} "
                        "for name in data.CLASS_NAMES}\n")

#: ``python -c SMALL_CACHE_COMMAND_LINE ARGS...`` is ``python -m distill ARGS...`` on the small cache.
SMALL_CACHE_COMMAND_LINE = (SMALL_SPLITS_PRELUDE + "import runpy\n"
                            "runpy.run_module('distill', run_name='__main__', alter_sys=True)\n")


@pytest.fixture
def small_mnist_cache(monkeypatch, tmp_path):
    """A warm array cache, in a fresh ``DISTILL_CACHE_DIR``, of toy uint8 images of MNIST's shape.

    Written by ``data.load_dataset`` itself, with a stand-in for TFDS. Returns the
    environment for a child process that reads it (no offline files: a cache miss fails);
    the child must run ``SMALL_SPLITS_PRELUDE`` first.
    """
    from distill import data

    toy = make_toy_dataset(num_features=784, per_class=SMALL_SPLITS["train"] // 10)
    assert (len(toy.train), len(toy.test)) == (SMALL_SPLITS["train"], SMALL_SPLITS["test"])
    arrays = {f"{name}_{kind}": value
              for name, split in (("train", toy.train), ("test", toy.test))
              for kind, value in (("images", np.round(split.images * 255).astype(np.uint8)
                                   .reshape(-1, 28, 28, 1)), ("labels", split.labels))}
    cache = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(cache))
    monkeypatch.setattr(data, "SPLIT_SIZES", {name: dict(SMALL_SPLITS)
                                              for name in data.CLASS_NAMES})
    monkeypatch.setattr(data, "_load_with_tfds", lambda name, data_dir: arrays)  # TFDS's stand-in
    data.load_dataset("mnist")
    assert len(list(cache.glob("mnist-*.npz"))) == 1
    return {**os.environ, data.CACHE_DIR_ENV: str(cache),
            data.DATA_DIR_ENV: str(tmp_path / "no-offline-files")}


@pytest.fixture
def x64():
    """JAX's 64-bit mode, switched off again after the test."""
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.fixture(autouse=True)
def _no_shared_runs(monkeypatch):
    """Every test keeps its results in its own cache, even where DISTILL_RUNS_DIR is set."""
    monkeypatch.delenv("DISTILL_RUNS_DIR", raising=False)
