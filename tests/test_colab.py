"""Every committed notebook runs top to bottom as it would in Colab.

As close to Colab as this machine allows:

- a fresh virtual environment holding only what a Colab runtime already has
  among the packages the book uses (``COLAB_PROVIDES``), and nothing of this
  repository. Their versions are those of requirements.txt, not Colab's of
  the day: this checks what the first cell installs and that nothing comes
  from the checkout, not every version Colab may ship;
- empty caches: the helper's data and results cache and TFDS's data folder
  start empty, so every chapter loads its data through TFDS and computes its
  baselines, as a first Colab session does;
- the notebook's own first cell installs the rest, exactly as written, except
  that it installs the helper package from a wheel built here from the
  source tree instead of from GitHub (this machine cannot reach GitHub);
- the committed ``.ipynb`` (the file Colab opens), executed from a directory
  outside the repository, by a kernel of that environment.

Colab is recognised by the notebooks through ``"google.colab" in
sys.modules``; a cell put in front of the install cell provides a stand-in
for that module, and one after it takes the stand-in away again.
One environment serves every chapter in turn (each Colab session would
start fresh; the first chapter's install is the one that matters here).

`bash scripts/test.sh` runs this module (it sets ``DISTILL_COLAB_TEST=1``);
a plain ``pytest tests`` skips it: it installs packages and runs every
chapter again, about ten minutes on two cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.test_book import CHAPTERS, CONFIG, ROOT

pytestmark = pytest.mark.skipif(
    os.environ.get("DISTILL_COLAB_TEST") != "1",
    reason="bash scripts/test.sh runs the Colab check (DISTILL_COLAB_TEST=1)")

#: What a Colab runtime ships among the packages the book uses. The helper
#: package, JAXopt and anything else the helper needs come from the
#: notebook's first cell.
COLAB_PROVIDES = ("jax", "jaxlib", "numpy", "scipy", "matplotlib", "optax", "tqdm",
                  "tensorflow", "tensorflow-datasets", "ipykernel")
KERNEL = "distill-colab-check"
COLAB_MARKER = ('import sys, types\n'
                'sys.modules.setdefault("google.colab", types.ModuleType("google.colab"))')


def pinned(names) -> list[str]:
    """``name==version`` for each name, as requirements.txt pins it."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    missing = [name for name in names if name not in pins]
    assert not missing, f"requirements.txt pins no version of {missing}"
    return [f"{name}=={pins[name]}" for name in names]


def run(command, **kwargs):
    completed = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert completed.returncode == 0, (
        f"{' '.join(map(str, command))} failed:\n{completed.stdout[-2000:]}\n"
        f"{completed.stderr[-4000:]}")
    return completed


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A wheel of the helper, a fresh Colab-like environment and a kernel for it."""
    base = tmp_path_factory.mktemp("colab")
    # The helper package as pip would get it from GitHub: a built wheel.
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "_build", "build", "dist", "*.egg-info", "__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", base / "dist",
         source])
    (wheel,) = (base / "dist").glob("distill-*.whl")
    shutil.rmtree(source)

    environment = base / "env"
    run([sys.executable, "-m", "venv", environment])
    python = environment / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", *pinned(COLAB_PROVIDES)])
    # Fresh: neither the helper nor JAXopt is there before the first cell runs.
    for module in ("distill", "jaxopt"):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                               cwd=base, env=_clean_environment(environment))
        assert probe.returncode != 0, f"{module} is importable before any notebook ran"
    kernels = base / "jupyter"
    run([python, "-m", "ipykernel", "install", "--prefix", kernels, "--name", KERNEL])
    work = base / "work"  # outside the repository
    work.mkdir()
    assert ROOT not in work.parents
    return {"wheel": wheel, "environment": environment, "kernels": kernels, "work": work,
            "caches": base / "caches"}


def _clean_environment(environment: Path) -> dict:
    """The process environment with this repository's virtual environment taken out."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_PATH", "PYTHONHOME")}
    repo_bin = str(ROOT / ".venv" / "bin")
    path = [entry for entry in env.get("PATH", "").split(os.pathsep) if entry != repo_bin]
    env["PATH"] = os.pathsep.join([str(environment / "bin"), *path])
    env["VIRTUAL_ENV"] = str(environment)
    return env


def as_in_colab(notebook, wheel: Path):
    """The committed notebook, with Colab's module present and a local source."""
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    github = f"git+{CONFIG['repository']['url']}"
    assert github in first.source, "the first cell does not install the helper from GitHub"
    first.source = first.source.replace(github, wheel.as_uri())
    # Colab's module, for the install cell only: JAX imports google.colab's
    # real submodules when it sees the name, which this stand-in lacks.
    at = notebook.cells.index(first)
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(
        'sys.modules.pop("google.colab")'))
    notebook.cells.insert(at, nbformat.v4.new_code_cell(COLAB_MARKER))
    # Last: the helper the chapter used is the installed wheel, not this checkout.
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import distill, jaxopt\n"
        "assert 'site-packages' in distill.__file__, distill.__file__\n"
        f"assert {str(ROOT)!r} not in distill.__file__, distill.__file__\n"
        "print(distill.__file__)"))
    return notebook


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_runs_in_a_fresh_colab_like_environment(colab, chapter, monkeypatch):
    from nbclient import NotebookClient

    notebook = as_in_colab(nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4),
                           colab["wheel"])
    environment = _clean_environment(colab["environment"])  # before os.environ is cleared
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JUPYTER_PATH", str(colab["kernels"] / "share" / "jupyter"))
    # Nothing computed by earlier runs on this machine: empty caches (shared
    # by the chapters, as one Colab session's would be).
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(colab["caches"] / "distill"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(colab["caches"] / "tensorflow_datasets"))
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=1800,
                            resources={"metadata": {"path": str(colab["work"])}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    installed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs
                        if output.get("name") == "stdout")
    assert str(colab["environment"]) in installed, installed
