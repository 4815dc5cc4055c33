"""One way to write a file: all of it or none of it.

Every file the helper writes (a distilled set, the dataset cache, a cached
result) goes through :func:`write_atomically`, so that a crash, a kill or a
full disk during the write never leaves half a file where a reader looks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path, write) -> Path:
    """Write ``path`` through a temporary file beside it, then rename it into place.

    Readers see the old file or the new one, never half of one. The data are
    flushed to disk before the rename, and the rename after it, so that a
    power cut keeps one of the two. If ``write`` or anything after it fails
    (or the process is interrupted), the temporary file is removed and the
    old ``path``, if any, is untouched. Only a process killed outright can
    leave its hidden temporary file (``.NAME.*.tmp``) behind; it is safe to
    delete.

    Args:
      path: the file to write; missing folders are created.
      write: ``write(file)``, given a binary file object open for writing.

    Returns:
      ``path`` as a :class:`~pathlib.Path`.

    Raises:
      IsADirectoryError: when ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the name of the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Flush the rename itself to disk, so that a power cut keeps the new file."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on this platform (e.g. Windows): the rename stands
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
