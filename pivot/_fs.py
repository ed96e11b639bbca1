"""File-system helpers shared by every layer: atomic replacement of a file (temp file in
the same folder, fsync, rename, fsync of the folder; or the temp file alone, for a caller
that flushes many at once and then syncs the folders it renamed into), creation of a new
file, and removal of a path of any kind."""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat
from typing import TYPE_CHECKING

from pivot.errors import writing

if TYPE_CHECKING:
    from collections.abc import Iterable
    from concurrent.futures import Executor


def write_bytes(
    path: pathlib.Path, data: bytes | Iterable[bytes], mode: int | None = None, sync: bool = True
) -> None:
    """Replace `path` with `data` (bytes, or parts written in turn) so that readers see the
    old or the new file, never half; durable before the rename, and the rename itself
    durable once this returns (its folder fsynced), unless not `sync` (a cache that is
    only slower without the file). The file gets the permission bits `mode`, else those of
    any new file (0o666 less the umask), not the temporary file's 0o600."""
    import tempfile  # not imported by a command that writes nothing

    with writing(path):
        changed = make_folder(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path), os.fdopen(fd, "wb") as handle:
            for part in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                handle.write(part)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        with writing(path):
            sync_folders([path.parent, *changed])


def make_folder(folder: pathlib.Path) -> list[pathlib.Path]:
    """Create `folder` and its missing parents; returns the folders whose entries that
    changed (the parent of each one created), to sync for the new folders to stay."""
    missing = []
    probe = folder
    while not probe.is_dir() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
    return [made.parent for made in missing]


def sync_folders(folders: Iterable[pathlib.Path | str], pool: Executor | None = None) -> None:
    """fsync each distinct folder once, so that the renames and creations in it survive a
    power loss (an fsync of a file makes its content durable, not its name); on `pool`'s
    threads when given, so that the journal commits them together."""
    unique = list(dict.fromkeys(os.fspath(folder) for folder in folders))
    if pool is not None and len(unique) > 1:
        list(pool.map(_sync_folder, unique))
        return
    for folder in unique:
        _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: pathlib.Path, data: bytes, made: set[pathlib.Path] | None = None) -> str:
    """A new temp file beside `path` holding `data`, not flushed: the caller makes it
    durable (with others, in one flush), renames it over `path` and syncs the folder
    (`sync_folders`, once per folder for all its renames). `made`: folders known to exist
    (the folder of `path` is created unless it is there, and added). It has the
    permission bits of any new file (0o666 less the umask)."""
    import tempfile

    with writing(path):
        if made is None or path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            if made is not None:
                made.add(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path), os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, 0o666 & ~umask())
            handle.write(data)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def umask(fresh: bool = False) -> int:
    """The process umask, read without ever changing it; cached, and read again with
    `fresh` (a program may have changed it since: checkout asks once per tree).

    `os.umask` can only be read by setting it and setting it back; the mask is
    process-wide, so a file another thread creates between the two calls would get the
    temporary mask (too open, or unusable). So it is never read that way: Linux tells it
    in /proc/self/status (microseconds); elsewhere (macOS) a child process inherits it and
    prints it (`sh -c umask`, a spawn of a few ms). If both fail, 0o077: files end up
    private rather than more open than the user asked, and checkout chmods every file to
    its recorded mode."""
    if fresh or not _UMASK:
        found = _proc_umask()
        if found is None:
            found = _child_umask()
        _UMASK[:] = [0o077 if found is None else found]
    return _UMASK[0]


def _proc_umask(status: str = "/proc/self/status") -> int | None:
    """The umask as Linux reports it in `status`, or None where it does not."""
    try:
        with open(status, "rb") as handle:
            for line in handle:
                if line.startswith(b"Umask:"):
                    return _octal_mask(line[6:].strip())
    except OSError:
        pass
    return None


def _child_umask() -> int | None:
    """The umask a child process inherits, as `sh -c umask` prints it, or None."""
    import subprocess

    try:
        done = subprocess.run(
            ["/bin/sh", "-c", "umask"], capture_output=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return _octal_mask(done.stdout.strip())


def _octal_mask(text: bytes) -> int | None:
    """`0022`-like text as a mask, or None unless it is 1 to 4 octal digits of at most
    0o777."""
    if not 1 <= len(text) <= 4 or not all(48 <= c <= 55 for c in text):
        return None
    value = int(text, 8)
    return value if value <= 0o777 else None


_UMASK: list[int] = []


def write_text(path: pathlib.Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Buffers handed to one `writev` (Linux's IOV_MAX).
WRITEV_PARTS = 1024


def write_parts(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write `parts` in turn, up to WRITEV_PARTS of them per system call, without joining
    them first (a 64 MB join is 64 MB of fresh memory, each page faulted in)."""
    for i in range(0, len(parts), WRITEV_PARTS):
        group = parts[i : i + WRITEV_PARTS]
        done = os.writev(fd, group)
        for part in group:
            view = memoryview(part).cast("B")
            if done >= len(view):
                done -= len(view)
                continue
            write_all(fd, view[done:])  # a short write: the rest of the group in turn
            done = 0


def write_new(
    path: str,
    data: bytes | memoryview | list[bytes | memoryview],
    mode: int,
    exact_mode: bool = False,
) -> os.stat_result:
    """Create `path` (which must not exist) holding `data` (or its parts in turn), with
    permission bits `mode` (less the umask, unless `exact_mode`); removed again on failure.
    Returns the file's stat once written (taken on its descriptor: a stat cache can record
    it without looking the path up again)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            if isinstance(data, list):  # a pack of 1,000s of blobs: few writes, no join
                write_parts(fd, data)
            else:
                write_all(fd, data)
            if exact_mode:
                os.fchmod(fd, mode)
            return os.fstat(fd)
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


_OWN_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_own_file(path: str, limit: int) -> bytes | None:
    """The bytes of a file Pivot keeps for itself (a memo, a cache index), or None when it
    is absent, unreadable, larger than `limit`, or not a regular file of its own: a link is
    not followed and a fifo in its place is never waited on."""
    try:
        fd = os.open(path, _OWN_FILE_FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        remove_path(pathlib.Path(path))
