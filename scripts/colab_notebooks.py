"""Prepare every committed notebook to run as Colab runs it, for nbval.

Usage: ``python scripts/colab_notebooks.py WORK [--link LINK] [CHAPTER ...]``,
where WORK is a folder outside the repository (replaced if this script made
it; any other folder there is refused) and each CHAPTER is a
``notebooks/NAME`` of ``_toc.yml`` (default: every chapter). It prints the
prepared notebooks, one path a line, in book order; with ``--link``, LINK
(for instance ``_build/colab``) becomes a symbolic link to
``WORK/notebooks`` and the paths go through it, so that pytest names each
test after a path in the repository while the kernel still runs outside it.
``scripts/test.sh`` passes them to pytest with ``--nbval-lax
--nbval-kernel-name distill-colab`` and
``JUPYTER_PATH=WORK/jupyter/share/jupyter``. So the run of every chapter
under nbval is also the check that it runs in Colab: each chapter executes
once in pytest, and once in the book build.

WORK then holds:

- ``dist/``: a wheel of the helper built from the source tree, the package
  as pip would get it from GitHub;
- ``env/``: a fresh virtual environment holding only what a Colab runtime
  already has among the packages the book uses (``COLAB_PROVIDES``), and
  nothing of this repository. Their versions are those of requirements.txt,
  not Colab's of the day: this checks what the first cell installs and that
  nothing comes from the checkout, not every version Colab may ship.
  Neither the helper nor JAXopt is importable in it before a notebook runs
  (checked here);
- ``jupyter/``: the kernel ``distill-colab``, that environment's Python,
  started with the environment's ``bin`` first on ``PATH`` and without this
  repository's ``.venv`` on it, and with caches of its own:
  ``DISTILL_CACHE_DIR`` and ``TFDS_DATA_DIR`` under ``caches/``, empty, so
  that every chapter loads its data through TFDS and computes its
  baselines, as a first Colab session does (the chapters share them, as one
  Colab session's would). ``DISTILL_DATA_DIR`` (the offline dataset files)
  passes through, and so does ``DISTILL_RUNS_DIR``: ``scripts/test.sh``
  sets it to a folder of distillation runs (``distill.cache.distilled``,
  chapter 8's) shared with the book build, so that each is computed once;
- ``notebooks/``: the committed ``.ipynb`` files (the files Colab opens),
  each with three cells added and one URL changed. Colab is recognised by
  the notebooks through ``"google.colab" in sys.modules``: a cell in front of
  the install cell checks that the kernel is the one described above, runs
  in ``notebooks/`` (outside the repository; nbval starts each kernel in
  its notebook's folder) and provides a stand-in for that module; one after
  the install cell takes the stand-in away again (JAX imports
  ``google.colab``'s real submodules when it sees the name). The install
  cell itself runs as written, except that it installs the helper from the
  wheel instead of from GitHub (this machine cannot reach GitHub). A last
  cell checks that the helper the chapter used is that wheel, installed in
  the environment, and read the caches above, and prints the versions of
  Python, JAX, jaxlib, JAXopt, Optax and NumPy (and Optimistix, Lineax and
  Equinox where installed) the chapter ran with.

One environment serves every chapter in turn (each Colab session would start
fresh; the first chapter's install is the one that matters here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())

#: What a Colab runtime ships among the packages the book uses. The helper
#: package, JAXopt and anything else the helper needs come from the
#: notebook's first cell.
COLAB_PROVIDES = ("jax", "jaxlib", "numpy", "scipy", "matplotlib", "optax", "tqdm",
                  "tensorflow", "tensorflow-datasets", "ipykernel")
KERNEL = "distill-colab"
#: The file that marks a WORK folder as this script's, so that it may be replaced.
MARKER = ".distill-colab-work"
#: Marks the cells this script adds, so a failure points here, not at the chapter.
ADDED = "# Added by scripts/colab_notebooks.py (not in the chapter):"


def chapters() -> list[str]:
    """Every chapter of _toc.yml (``notebooks/NAME``), in book order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc.get("parts", []) for chapter in part["chapters"]]
    return [file for file in files if file.startswith("notebooks/")]


def pinned(names) -> list[str]:
    """``name==version`` for each name, as requirements.txt pins it."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    missing = [name for name in names if name not in pins]
    if missing:
        raise ValueError(f"requirements.txt pins no version of {missing}")
    return [f"{name}=={pins[name]}" for name in names]


def as_in_colab(notebook, *, wheel: Path, environment: Path, site_packages: Path,
                caches: dict[str, Path], cwd: Path):
    """The committed notebook, with Colab's module present and the wheel as the source."""
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    github = f"git+{CONFIG['repository']['url']}"
    if github not in first.source:
        raise ValueError(f"the first code cell does not install the helper from {github}")
    first.source = first.source.replace(github, wheel.as_uri())
    at = notebook.cells.index(first)
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"{ADDED} the install cell is done.\n"
        'sys.modules.pop("google.colab")'))
    checks = "".join(
        f"assert os.environ.get({name!r}) == {str(path)!r}, os.environ.get({name!r})\n"
        for name, path in caches.items())
    notebook.cells.insert(at, nbformat.v4.new_code_cell(
        f"{ADDED} the kernel is the Colab stand-in's.\n"
        "import os, sys, types\n"
        f"assert os.path.realpath(sys.prefix) == {str(environment.resolve())!r}, sys.prefix\n"
        f"assert os.path.realpath(os.getcwd()) == {str(cwd.resolve())!r}, os.getcwd()\n"
        f"{checks}"
        'sys.modules.setdefault("google.colab", types.ModuleType("google.colab"))'))
    notebook.cells.append(nbformat.v4.new_code_cell(
        f"{ADDED} the helper used was the wheel, installed here.\n"
        "import importlib.metadata, json, os\n"
        "import distill, jaxopt\n"
        "from distill import data\n"
        f"assert os.path.realpath(distill.__file__).startswith("
        f"{str(site_packages.resolve()) + os.sep!r}), distill.__file__\n"
        f"assert {str(ROOT)!r} not in os.path.realpath(distill.__file__), distill.__file__\n"
        'origin = json.loads(importlib.metadata.distribution("distill").read_text("direct_url.json"))\n'
        f"assert origin['url'] == {wheel.as_uri()!r}, origin\n"
        f"assert origin['archive_info']['hash'] == 'sha256={_sha256(wheel)}', origin\n"
        f"assert str(data.cache_dir()) == {str(caches['DISTILL_CACHE_DIR'])!r}, data.cache_dir()\n"
        "print(distill.__file__)\n"
        "import platform\n"
        "names = ('jax', 'jaxlib', 'jaxopt', 'optax', 'numpy', 'optimistix', 'lineax', 'equinox')\n"
        "installed = {d.metadata['Name'].lower() for d in importlib.metadata.distributions()}\n"
        "print('ran with Python', platform.python_version(), ', '.join(\n"
        "    f'{name} {importlib.metadata.version(name)}' for name in names if name in installed))"))
    return notebook


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                               **kwargs)
    if completed.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{completed.stdout[-2000:]}\n"
                 f"{completed.stderr[-4000:]}")
    return completed


_started = time.perf_counter()


def _log(message: str) -> None:
    print(f"== colab [{time.perf_counter() - _started:5.0f} s] {message}", file=sys.stderr,
          flush=True)


def kernel_environment(environment: Path, caches: dict[str, Path]) -> dict[str, str]:
    """What the kernel's environment changes: this repository's .venv out, the stand-in's in.

    A kernel starts with the environment of the process that starts it
    (pytest) updated by these values; an empty value counts as unset for
    Python and Jupyter.
    """
    repo_bin = str(ROOT / ".venv" / "bin")
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and Path(entry).resolve() != Path(repo_bin).resolve()]
    return {"PATH": os.pathsep.join([str(environment / "bin"), *path]),
            "VIRTUAL_ENV": str(environment),
            "PYTHONPATH": "", "PYTHONHOME": "", "JUPYTER_PATH": "",
            **{name: str(folder) for name, folder in caches.items()}}


def prepare(work: Path, names: list[str]) -> list[Path]:
    """Build the wheel, the environment, the kernel and the notebooks in ``work``."""
    work = work.resolve()
    if work == ROOT or ROOT in work.parents or work in ROOT.parents:
        sys.exit(f"WORK={work} must be outside the repository {ROOT}")
    if work.exists():
        if not (work / MARKER).is_file() and any(work.iterdir()):
            sys.exit(f"WORK={work} exists and was not made by {Path(__file__).name}: "
                     f"not replacing it")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text(f"made by {__file__}; replaced by its next run\n")

    _log("building the helper's wheel from the source tree")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "_build", "build", "dist", "*.egg-info", "__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", work / "dist",
          source])
    (wheel,) = (work / "dist").glob("distill-*.whl")
    shutil.rmtree(source)

    _log(f"a fresh virtual environment with only {', '.join(COLAB_PROVIDES)}")
    environment = work / "env"
    _run([sys.executable, "-m", "venv", environment])
    python = environment / "bin" / "python"
    # --no-compile: the modules a chapter imports are compiled when it imports them.
    _run([python, "-m", "pip", "install", "--quiet", "--no-compile", *pinned(COLAB_PROVIDES)])
    caches = {"DISTILL_CACHE_DIR": work / "caches" / "distill",
              "TFDS_DATA_DIR": work / "caches" / "tensorflow_datasets"}
    for folder in caches.values():
        folder.mkdir(parents=True)
    kernel_env = kernel_environment(environment, caches)
    clean = {**os.environ, **kernel_env}
    for module in ("distill", "jaxopt"):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                               cwd=work, env=clean)
        if probe.returncode == 0:
            sys.exit(f"{module} is importable in {environment} before any notebook ran")
    site_packages = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              env=clean).stdout.strip())

    _log(f"the kernel {KERNEL}")
    kernels = work / "jupyter"
    _run([python, "-m", "ipykernel", "install", "--prefix", kernels, "--name", KERNEL,
          "--display-name", "Python 3 (Colab stand-in)"], env=clean)
    spec_file = kernels / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    spec = json.loads(spec_file.read_text())
    if Path(spec["argv"][0]) != python:
        sys.exit(f"the kernel {KERNEL} runs {spec['argv'][0]}, not {python}")
    spec["env"] = kernel_env
    spec_file.write_text(json.dumps(spec, indent=1))

    folder = work / "notebooks"  # nbval starts each kernel here
    folder.mkdir()
    prepared = []
    for name in names:
        notebook = nbformat.read(ROOT / f"{name}.ipynb", as_version=4)
        try:
            as_in_colab(notebook, wheel=wheel, environment=environment,
                        site_packages=site_packages, caches=caches, cwd=folder)
        except ValueError as error:
            sys.exit(f"{name}.ipynb: {error}")
        path = folder / f"{Path(name).name}.ipynb"
        nbformat.write(notebook, path)
        prepared.append(path)
    _log(f"{len(prepared)} notebooks in {folder}")
    return prepared


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="a folder outside the repository (replaced)")
    parser.add_argument("chapters", nargs="*", help="notebooks/NAME of _toc.yml (default: all)")
    parser.add_argument("--link", type=Path,
                        help="a symbolic link to make to WORK/notebooks; paths printed through it")
    args = parser.parse_args(argv)
    known = chapters()
    unknown = [name for name in args.chapters if name not in known]
    if unknown:
        parser.error(f"chapters={unknown}: not in _toc.yml ({', '.join(known)})")
    if args.link is not None and args.link.exists() and not args.link.is_symlink():
        parser.error(f"--link {args.link}: exists and is not a symbolic link")
    prepared = prepare(args.work, args.chapters or known)
    if args.link is not None:
        args.link.unlink(missing_ok=True)
        args.link.parent.mkdir(parents=True, exist_ok=True)
        args.link.symlink_to(prepared[0].parent, target_is_directory=True)
        prepared = [args.link / path.name for path in prepared]
    for path in prepared:
        print(path)


if __name__ == "__main__":
    main()
