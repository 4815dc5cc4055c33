"""distill.atomic.write_atomically: all of a file or none of it."""

import os

import pytest

from distill.atomic import write_atomically


def test_writes_the_file_creating_its_folders_and_leaves_nothing_else(tmp_path):
    path = write_atomically(tmp_path / "a" / "b" / "file.bin", lambda file: file.write(b"new"))
    assert path == tmp_path / "a" / "b" / "file.bin" and path.read_bytes() == b"new"
    assert os.listdir(path.parent) == ["file.bin"]
    write_atomically(str(path), lambda file: file.write(b"newer"))  # replaces it; str paths too
    assert path.read_bytes() == b"newer" and os.listdir(path.parent) == ["file.bin"]


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_a_write_that_fails_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, failure):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def write_half_then_fail(file):
        file.write(b"half of the new")
        file.flush()
        assert len(os.listdir(tmp_path)) == 2  # the temporary file, beside the old one
        raise failure

    with pytest.raises(type(failure)):
        write_atomically(path, write_half_then_fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path):
    with pytest.raises(ValueError, match="boom"):
        write_atomically(tmp_path / "new.bin", lambda file: (_ for _ in ()).throw(ValueError("boom")))
    assert os.listdir(tmp_path) == []


def test_a_folder_is_refused_by_name(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=f"{folder}.*folder"):
        write_atomically(folder, lambda file: file.write(b"x"))
    assert os.listdir(folder) == [] and os.listdir(tmp_path) == ["results"]
