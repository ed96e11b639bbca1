"""File-system helpers shared by every layer: atomic replacement of a file (temp file in
the same folder, fsync, rename; or the temp file alone, for a caller that flushes many at
once), creation of a new file, and removal of a path of any kind."""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat
from typing import TYPE_CHECKING

from pivot.errors import writing

if TYPE_CHECKING:
    from collections.abc import Iterable


def write_bytes(
    path: pathlib.Path, data: bytes | Iterable[bytes], mode: int | None = None, sync: bool = True
) -> None:
    """Replace `path` with `data` (bytes, or parts written in turn) so that readers see the
    old or the new file, never half; durable before the rename unless not `sync` (a cache
    that is only slower without the file)."""
    import tempfile  # not imported by a command that writes nothing

    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path), os.fdopen(fd, "wb") as handle:
            for part in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                handle.write(part)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_temp(path: pathlib.Path, data: bytes, made: set[pathlib.Path] | None = None) -> str:
    """A new temp file beside `path` holding `data`, not flushed: the caller makes it
    durable (with others, in one flush) and then renames it over `path`. `made`: folders
    known to exist (the folder of `path` is created unless it is there, and added)."""
    import tempfile

    with writing(path):
        if made is None or path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            if made is not None:
                made.add(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path), os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_text(path: pathlib.Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_new(path: str, data: bytes | memoryview | list[bytes | memoryview], mode: int) -> None:
    """Create `path` (which must not exist) holding `data` (or its parts in turn), with
    permission bits `mode` (less the umask); removed again on failure."""
    if isinstance(data, list):  # one write, not one per part (a pack of 1,000 blobs)
        data = b"".join(data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        remove_quietly(path)
        raise


def remove_path(path: pathlib.Path) -> None:
    """Remove a file, link or directory tree (read-only entries included)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()


def remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        remove_path(pathlib.Path(path))
