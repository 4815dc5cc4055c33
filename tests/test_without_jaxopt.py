"""The helper in an environment without JAXopt: every model on the core-JAX backend.

``scripts/test.sh`` runs this file with ``DISTILL_WITHOUT_JAXOPT_PYTHON`` set to
the Python of the Colab stand-in (``scripts/colab_notebooks.py``): a fresh
environment with only what Colab ships among the book's packages (JAX, Optax,
NumPy, TensorFlow Datasets, ...) at the tested versions, where JAXopt was never
installed. It runs there before any chapter's install cell adds JAXopt to it.
The helper comes from this checkout's ``src`` (``PYTHONPATH``), nothing else
from it. Without the variable, the tests are skipped.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("DISTILL_WITHOUT_JAXOPT_PYTHON")

# The data: DISTILL_DATA_DIR's files where it is set (as on machines without
# internet), else TFDS's download, as everywhere else.
pytestmark = pytest.mark.skipif(not PYTHON, reason="scripts/test.sh sets "
                                "DISTILL_WITHOUT_JAXOPT_PYTHON to an environment without JAXopt")

FAST = ["--no-progress", "--no-compile-cache"]


def _run(python, *arguments, cwd):
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    completed = subprocess.run([python, *arguments], cwd=cwd, env=environment,
                               capture_output=True, text=True, timeout=900)
    return completed


def _outer_loss_and_accuracy(stdout):
    loss = float(re.search(r"outer loss [\d.]+ -> ([\d.]+)", stdout).group(1))
    accuracy = float(re.search(r"test accuracy of logistic regression trained on them: "
                               r"([\d.]+)%", stdout).group(1))
    return loss, accuracy


def test_jaxopt_is_not_installed_there(tmp_path):
    completed = _run(PYTHON, "-c", "import importlib.util, sys; "
                     "sys.exit(importlib.util.find_spec('jaxopt') is not None)", cwd=tmp_path)
    assert completed.returncode == 0, "JAXopt is importable in the environment without it"


@pytest.mark.parametrize("preset, advice", [("fixed-l2reg", "--implicit-diff jax"),
                                             ("seed", "pip install jaxopt==0.8.5")])
def test_what_needs_jaxopt_says_so_and_what_to_do(tmp_path, preset, advice):
    completed = _run(PYTHON, "-m", "distill", "--preset", preset,
                     "--out", str(tmp_path / "set.npz"), *FAST, cwd=tmp_path)
    assert completed.returncode == 2
    assert "JAXopt is not installed" in completed.stderr and advice in completed.stderr
    assert not (tmp_path / "set.npz").exists()


@pytest.mark.parametrize("preset", ["fixed-l2reg", "learned-l2reg"])
def test_logistic_regression_distills_as_with_jaxopt(tmp_path, preset):
    """The same run, JAXopt's backend here and the core-JAX one there: the
    same outer loss to the inner solves' accuracy, the same test accuracy
    to a few images."""
    options = ["-m", "distill", "--preset", preset, "--steps", "40", *FAST]
    with_jaxopt = _run(sys.executable, *options, "--out", str(tmp_path / "jaxopt.npz"),
                       cwd=tmp_path)
    assert with_jaxopt.returncode == 0, with_jaxopt.stderr
    without = _run(PYTHON, *options, "--implicit-diff", "jax",
                   "--out", str(tmp_path / "jax.npz"), cwd=tmp_path)
    assert without.returncode == 0, without.stderr
    assert "stopped at maxiter: 0 of" in without.stdout
    loss_jaxopt, accuracy_jaxopt = _outer_loss_and_accuracy(with_jaxopt.stdout)
    loss_jax, accuracy_jax = _outer_loss_and_accuracy(without.stdout)
    assert abs(loss_jax - loss_jaxopt) <= 0.01 * loss_jaxopt
    assert abs(accuracy_jax - accuracy_jaxopt) <= 0.5
    with np.load(tmp_path / "jax.npz") as saved:
        assert saved["images"].shape == (10, 784)


def test_the_convnet_distills_and_is_scored(tmp_path):
    out = tmp_path / "convnet.npz"
    distilled = _run(PYTHON, "-m", "distill", "--model", "convnet", "--implicit-diff", "jax",
                     "--images-per-class", "1", "--steps", "6", "--width", "8",
                     "--pool-size", "2", "--out", str(out), *FAST, cwd=tmp_path)
    assert distilled.returncode == 0, distilled.stderr
    assert "stopped at maxiter: 0 of 6" in distilled.stdout
    scored = _run(PYTHON, "-m", "distill", "evaluate", str(out), "--seeds", "1", "--epochs", "2",
                  "--no-progress", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "ConvNet test accuracy" in scored.stdout
