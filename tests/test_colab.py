"""How scripts/colab_notebooks.py prepares the chapters that nbval runs as Colab would.

`bash scripts/test.sh` runs every prepared chapter under nbval, in a fresh
environment from a built wheel; these checks of the preparation itself are
fast and run with any ``pytest tests``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os

import nbformat
import pytest

from tests.test_book import CHAPTERS, CONFIG, ROOT

_spec = importlib.util.spec_from_file_location("colab_notebooks",
                                               ROOT / "scripts" / "colab_notebooks.py")
colab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab)


def test_the_script_prepares_every_chapter_of_the_book_in_order():
    assert colab.chapters() == CHAPTERS


def test_requirements_pin_everything_colab_provides():
    pins = colab.pinned(colab.COLAB_PROVIDES)
    assert [pin.split("==")[0] for pin in pins] == list(colab.COLAB_PROVIDES)
    assert all(pin.split("==")[1] for pin in pins)
    with pytest.raises(ValueError, match="not-a-package"):
        colab.pinned(["jax", "not-a-package"])


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_a_prepared_chapter_is_the_committed_one_plus_the_stand_ins_cells(chapter, tmp_path):
    committed = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    wheel = tmp_path / "dist" / "distill-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"a wheel")
    caches = {"DISTILL_CACHE_DIR": tmp_path / "caches" / "distill",
              "TFDS_DATA_DIR": tmp_path / "caches" / "tensorflow_datasets"}
    prepared = colab.as_in_colab(
        nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4), wheel=wheel,
        environment=tmp_path / "env", site_packages=tmp_path / "env" / "site-packages",
        caches=caches, cwd=tmp_path / "notebooks")

    added = [cell for cell in prepared.cells if cell.source.startswith(colab.ADDED)]
    kept = [cell for cell in prepared.cells if not cell.source.startswith(colab.ADDED)]
    assert len(added) == 3 and prepared.cells[-1] is added[-1]
    for cell in added:
        ast.parse(cell.source)  # valid Python
    # The chapter's own cells run as committed, but for where the helper comes from.
    github = f"git+{CONFIG['repository']['url']}"
    install = next(cell for cell in committed.cells if cell.cell_type == "code")
    assert [cell.source for cell in kept] == [
        cell.source.replace(github, wheel.as_uri()) if cell is install else cell.source
        for cell in committed.cells]
    assert wheel.as_uri() in kept[committed.cells.index(install)].source
    # The stand-in for google.colab exists for the install cell only.
    at = prepared.cells.index(kept[committed.cells.index(install)])
    assert 'setdefault("google.colab"' in prepared.cells[at - 1].source
    assert 'pop("google.colab")' in prepared.cells[at + 1].source
    # The kernel is checked before the chapter runs, the helper's origin after.
    for name, folder in caches.items():
        assert f"os.environ.get({name!r}) == {str(folder)!r}" in prepared.cells[at - 1].source
    assert wheel.as_uri() in prepared.cells[-1].source
    assert hashlib.sha256(b"a wheel").hexdigest() in prepared.cells[-1].source


def test_a_chapter_that_does_not_install_from_github_is_refused(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import distill")])
    with pytest.raises(ValueError, match="does not install the helper"):
        colab.as_in_colab(notebook, wheel=tmp_path / "w.whl", environment=tmp_path,
                          site_packages=tmp_path, caches={"DISTILL_CACHE_DIR": tmp_path},
                          cwd=tmp_path)


def test_the_kernel_leaves_this_repositorys_environment_out(monkeypatch, tmp_path):
    repo_bin = str(ROOT / ".venv" / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join([repo_bin, "/usr/bin"]))
    caches = {"DISTILL_CACHE_DIR": tmp_path / "distill"}
    env = colab.kernel_environment(tmp_path / "env", caches)
    assert env["PATH"].split(os.pathsep) == [str(tmp_path / "env" / "bin"), "/usr/bin"]
    assert env["VIRTUAL_ENV"] == str(tmp_path / "env")
    assert env["DISTILL_CACHE_DIR"] == str(tmp_path / "distill")
    assert env["PYTHONPATH"] == env["PYTHONHOME"] == ""


def test_work_inside_the_repository_or_not_made_by_the_script_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="outside the repository"):
        colab.prepare(ROOT / "_build" / "colab-work", CHAPTERS[:1])
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not made by"):
        colab.prepare(tmp_path, CHAPTERS[:1])
    assert (tmp_path / "precious.txt").read_text() == "keep me"
