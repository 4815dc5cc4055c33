"""The book's structure: table of contents, notebook pairs, Colab install cells."""

from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def toc_files():
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


CHAPTERS = [f for f in toc_files() if f.startswith("notebooks/")]


def test_toc_lists_every_notebook_and_nothing_missing():
    on_disk = sorted(f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.md"))
    assert sorted(CHAPTERS) == on_disk
    for file in toc_files():
        assert (ROOT / f"{file}.md").exists() or (ROOT / f"{file}.ipynb").exists(), file


def test_book_reads_the_ipynb_side_only():
    # Sphinx must see one file per chapter; the .ipynb is the one Colab opens.
    assert "notebooks/*.md" in CONFIG["exclude_patterns"]
    assert CONFIG["only_build_toc_files"] is True


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_markdown_and_notebook_are_in_sync(chapter):
    md = jupytext.read(ROOT / f"{chapter}.md")
    ipynb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)

    def cells(notebook):
        return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]

    assert cells(md) == cells(ipynb), f"run: jupytext --sync {chapter}.md"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_committed_notebook_is_clean(chapter):
    text = (ROOT / f"{chapter}.ipynb").read_text()
    notebook = nbformat.reads(text, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert "widgets" not in notebook.metadata and "colab" not in notebook.metadata
    for machine_path in ("/work/", "/tmp/", "/home/", "/root/", "shared/data"):
        assert machine_path not in text, machine_path


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_first_cell_installs_the_helper_in_colab_only(chapter):
    notebook = jupytext.read(ROOT / f"{chapter}.md")
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert 'if "google.colab" in sys.modules:' in first_code.source
    assert f"git+{CONFIG['repository']['url']}" in first_code.source
    assert "hide-cell" in first_code.metadata.get("tags", [])
