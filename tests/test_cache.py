"""Cached results never outlive the code that computed them."""

import re
import shutil

import numpy as np
import pytest

from distill import cache


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """An empty results cache and a computation that counts its calls."""
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    calls = []

    def compute():
        calls.append(None)
        return {"values": np.full(3, float(len(calls)))}

    return compute, calls


def test_a_change_in_the_helpers_source_misses_the_cache(monkeypatch, counted):
    compute, calls = counted
    first = cache.cached("demo", {"a": 1}, compute)
    np.testing.assert_array_equal(cache.cached("demo", {"a": 1}, compute)["values"], first["values"])
    assert len(calls) == 1  # same code, same key: read back

    monkeypatch.setattr(cache, "source_hash", lambda: "0" * 32)  # the helper's code changed
    changed = cache.cached("demo", {"a": 1}, compute)
    assert len(calls) == 2
    np.testing.assert_array_equal(changed["values"], [2.0, 2.0, 2.0])


def test_the_source_hash_sees_every_python_file_and_only_their_content(tmp_path):
    copy = tmp_path / "distill"
    shutil.copytree(cache.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # Where the package is installed does not matter (a wheel or the checkout).
    assert cache.source_hash(copy) == cache.source_hash()
    assert len(cache.source_hash()) == 32

    edited = tmp_path / "edited"
    shutil.copytree(copy, edited)
    with open(edited / "evaluate.py", "a") as file:
        file.write("\n# a comment is a change too\n")
    assert cache.source_hash(edited) != cache.source_hash(copy)

    added = tmp_path / "added"
    shutil.copytree(copy, added)
    (added / "new_module.py").write_text("")
    assert cache.source_hash(added) != cache.source_hash(copy)

    renamed = tmp_path / "renamed"
    shutil.copytree(copy, renamed)
    (renamed / "evaluate.py").rename(renamed / "evaluation.py")
    assert cache.source_hash(renamed) != cache.source_hash(copy)

    other_files = tmp_path / "other_files"
    shutil.copytree(copy, other_files)
    (other_files / "notes.txt").write_text("not code")
    assert cache.source_hash(other_files) == cache.source_hash(copy)


def test_the_source_hash_refuses_a_folder_without_code(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"package_dir={str(tmp_path)!r}")):
        cache.source_hash(tmp_path)
