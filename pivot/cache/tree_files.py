"""The files of a folder being stored (a directory output, a tracked folder), listed and
opened relative to descriptors of their folders.

Each subfolder is opened from the top folder one level at a time with `O_NOFOLLOW`, and
each regular file with `O_NOFOLLOW` in its folder: a subfolder or file swapped for a
symbolic link after the walk saw it is refused (`UnsafePath`), never followed out of the
folder. A symbolic link the walk found (its target checked by the caller) is opened
following it, relative to its folder.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import TYPE_CHECKING

from pivot.errors import UnsafePath

if TYPE_CHECKING:
    from collections.abc import Collection

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_CLOEXEC
_SWAPPED = (errno.ELOOP, errno.ENOTDIR)


class TreeFiles:
    """The folder `top`, at `rel` in the project, open while the block runs: its files
    are listed by `walk` and opened by `open`, from any thread."""

    def __init__(self, top: str, rel: str) -> None:
        self.top = top
        self.rel = rel
        self.links: Collection[str] = frozenset()
        self._top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._local = threading.local()
        self._cursors: list[list] = []  # each thread's [folder, its descriptor or None]
        self._lock = threading.Lock()

    def __enter__(self) -> TreeFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            cursors, self._cursors = self._cursors, []
        for _, fd in cursors:
            if fd is not None:
                os.close(fd)
        os.close(self._top_fd)

    def walk(self) -> tuple[list[str], list[str]]:
        """The inner POSIX paths of the files under the folder (links to files included,
        links to folders not followed), and those of them that are symbolic links (also
        kept in `links`, which `open` follows)."""
        files: list[str] = []
        links: list[str] = []
        folders = [""]
        while folders:
            folder = folders.pop()
            fd = self._open_folder(folder) if folder else self._top_fd
            try:  # open while the entries are examined (a link's target is stat-ed in it)
                self._list(fd, f"{folder}/" if folder else "", files, links, folders)
            finally:
                if folder:
                    os.close(fd)
        self.links = frozenset(links)
        return files, links

    @staticmethod
    def _list(fd: int, prefix: str, files: list[str], links: list[str], folders: list[str]) -> None:
        """Add the entries of the open folder `fd` (at `prefix`) to the walk's lists."""
        with os.scandir(fd) as listing:
            entries = list(listing)
        regular = [e.name for e in entries if e.is_file(follow_symlinks=False)]
        files += [prefix + name for name in regular] if prefix else regular
        if len(regular) == len(entries):
            return
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                continue
            if entry.is_symlink():
                if not entry.is_dir():
                    links.append(prefix + entry.name)
                    files.append(prefix + entry.name)
            elif entry.is_dir():
                folders.append(prefix + entry.name)
            else:  # a FIFO, socket or device: stored as a file is, as `os.walk` lists it
                files.append(prefix + entry.name)

    def open(self, inner: str) -> int:
        """A read descriptor of the file `inner` (a path `walk` returned), opened in its
        folder's descriptor; a regular file never through a link."""
        folder, _, name = inner.rpartition("/")
        fd = self._folder_fd(folder)
        flags = _FILE if inner in self.links else _FILE | os.O_NOFOLLOW
        try:
            return os.open(name, flags, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._swapped(inner, "file") from None
            raise OSError(exc.errno, exc.strerror, os.path.join(self.top, inner)) from None

    def _folder_fd(self, folder: str) -> int:
        """The descriptor of `folder`, kept per thread while the next files lie in it."""
        if not folder:
            return self._top_fd
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = ["", None]
            with self._lock:
                self._cursors.append(cursor)
        if cursor[0] == folder and cursor[1] is not None:
            return cursor[1]
        fd = self._open_folder(folder)
        if cursor[1] is not None:
            os.close(cursor[1])
        cursor[0], cursor[1] = folder, fd
        return fd

    def _open_folder(self, folder: str) -> int:
        """A descriptor of the subfolder `folder`, opened one level at a time from the
        top without following a link."""
        fd = self._top_fd
        try:
            for part in folder.split("/"):
                try:
                    inner = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in _SWAPPED:
                        raise OSError(
                            exc.errno, exc.strerror, os.path.join(self.top, folder)
                        ) from None
                    raise self._swapped(folder, "folder") from None
                if fd != self._top_fd:
                    os.close(fd)
                fd = inner
        except BaseException:
            if fd != self._top_fd:
                os.close(fd)
            raise
        return fd

    def _swapped(self, inner: str, kind: str) -> UnsafePath:
        path = f"{self.rel}/{inner}"
        return UnsafePath(
            f"Refusing to store {self.rel!r}: its {kind} {path!r} is no longer a {kind} (a "
            f"symbolic link or something else took its place while Pivot was storing it). "
            f"Pivot never reads through a link swapped in there; check what changed it and "
            f"try again.",
            path=path,
        )
