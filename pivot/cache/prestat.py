"""Large folders stat-ed ahead of the plan: at the start of `pivot run`, before the imports
and the plan, a helper process lists each folder whose stored snapshot is large (a
directory output of many files) and stats its entries from the last one backwards, on a
core that would otherwise wait. When the plan checks that folder (`scan`), this process
takes the helper's names, stats from the first entry forwards until it meets the rows the
helper wrote, and ends the helper: the listing is the one `scan` makes alone, each entry
stat-ed once, by one process or the other.

Only a check made while planning may take it (`close_window` ends every helper and refuses
later claims): after the plan the command may write into the folder itself, and a listing
from before that write would be stale. A helper that failed, a folder replaced in between,
a claim out of the window, or names from the helper that are not each one entry of the
folder (its memory files are untrusted, as anything read) all mean the folder is listed
anew, so this only ever costs speed."""

from __future__ import annotations

import os
import sys
from array import array
from functools import partial
from itertools import chain
from operator import attrgetter
from typing import Any

SNAPSHOTS = "tree-snapshot"  # snapshot.NAMESPACE, not imported: this runs before imports
MIN_FILES = 5_000  # a snapshot of fewer files is not worth a helper
MAX_FOLDERS = 2
MIN_CORES = 2  # with one core the helper would only take turns with this process
CHUNK = 2_000  # entries this process stats between two looks at the helper's progress
# Stat fields per entry as `snapshot.scan` packs them; the helper writes them in reverse
# (and its entries in reverse), so one `array.reverse` puts its rows in scan's order.
_STAT_FIELDS = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_mode")
ROW = len(_STAT_FIELDS) * array("q").itemsize
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# The helper: lists the folder it inherited (argv[1]), writes the NUL-joined names to the
# file argv[2], their count and length to stdout, then each entry's reversed row, from the
# last entry backwards, to the file argv[3], a chunk at a time.
_HELPER = f"""\
import os, sys
from array import array
from functools import partial
from itertools import chain
from operator import attrgetter
fd, names_fd, rows_fd = map(int, sys.argv[1:4])
names = os.listdir(fd)
blob = "\\0".join(names).encode("utf-8", "surrogateescape")
with open(names_fd, "wb", closefd=False) as out:
    out.write(blob)
sys.stdout.buffer.write(array("q", (len(names), len(blob))).tobytes())
sys.stdout.flush()
fields = attrgetter(*{tuple(reversed(_STAT_FIELDS))!r})
lstat = partial(os.stat, dir_fd=fd, follow_symlinks=False)
names.reverse()
with open(rows_fd, "wb", closefd=False) as out:
    for k in range(0, len(names), {CHUNK}):
        out.write(array("q", chain.from_iterable(map(fields, map(lstat, names[k : k + {CHUNK}])))))
        out.flush()
"""
_FIELDS = attrgetter(*_STAT_FIELDS)

_ahead: dict[str, _Ahead] = {}  # absolute folder path -> its helper, until claimed
_window = {"open": False}


class _Ahead:
    """A helper stat-ing the folder opened here as `fd`, from its last entry backwards."""

    def __init__(self, fd: int) -> None:
        import subprocess

        self.fd = fd
        self.owner = os.getpid()  # a forked process must not signal or wait for it
        self.names_fd = os.memfd_create("pivot-names", os.MFD_CLOEXEC)
        self.rows_fd = os.memfd_create("pivot-rows", os.MFD_CLOEXEC)
        try:
            self.proc: Any = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _HELPER,
                    *map(str, (fd, self.names_fd, self.rows_fd)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=(fd, self.names_fd, self.rows_fd),
            )
        except BaseException:
            os.close(self.names_fd)
            os.close(self.rows_fd)
            raise

    def take(self, fd: int) -> tuple[list[str], array] | None:
        """The names of the folder `fd` and their packed rows (in `scan`'s order), or None
        if the helper listed another folder or failed before writing its names."""
        mine, theirs = os.fstat(fd), os.fstat(self.fd)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None
        head = self.proc.stdout.read(16)
        if len(head) != 16:
            return None
        count, length = array("q", head)
        blob = os.pread(self.names_fd, length, 0)
        if len(blob) != length:
            return None
        names = blob.decode("utf-8", "surrogateescape").split("\0") if count else []
        if len(names) != count or not _entry_names(blob, names):
            return None
        lstat = partial(os.stat, dir_fd=fd, follow_symlinks=False)
        rows = array("q")
        done = 0  # entries stat-ed here, from the first
        while True:
            theirs_done = os.fstat(self.rows_fd).st_size // ROW  # whole rows only
            if done + theirs_done >= count:
                break
            upto = min(done + CHUNK, count - theirs_done)
            rows.extend(chain.from_iterable(map(_FIELDS, map(lstat, names[done:upto]))))
            done = upto
        self.end()
        tail = array("q")
        tail.frombytes(os.pread(self.rows_fd, (count - done) * ROW, 0))
        if len(tail) != (count - done) * len(_STAT_FIELDS):
            return None
        tail.reverse()
        rows += tail
        return names, rows

    def end(self) -> None:
        """End the helper if it still runs, reap it and close what it was given."""
        if os.getpid() != self.owner:
            self.proc.stdout.close()
            return
        if self.proc.returncode is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def close(self) -> None:
        self.end()
        for fd in (self.fd, self.names_fd, self.rows_fd):
            os.close(fd)


def _entry_names(blob: bytes, names: list[str]) -> bool:
    """Whether the helper's `names` (NUL-joined in `blob`) are each one entry of a folder,
    as a listing gives them: no separator, and none empty, `.` or `..`."""
    return b"/" not in blob and {"", ".", ".."}.isdisjoint(names)


def runs_stages(argv: list[str]) -> bool:
    """Whether `argv` is the command line of `pivot run` about to plan and run (not one
    asking for its help, nor shell completion, whose words are not in `argv`): the
    commands worth starting helpers for before the imports."""
    command = os.path.basename(argv[0]) if argv else ""
    return (
        command in ("pivot", "__main__.py")
        and argv[1:2] == ["run"]
        and {"-h", "--help"}.isdisjoint(argv[2:])
    )


def start(argv: list[str]) -> None:
    """Start helpers for the large folders of the project around the cwd, if `argv` is
    the command line of `pivot run` (`runs_stages`) and there is a core to spare; any
    failure only means no helper."""
    if not runs_stages(argv):
        return
    if not hasattr(os, "memfd_create") or not sys.executable:
        return
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < MIN_CORES:
        return
    try:
        root = _root(os.getcwd())
        if root is None:
            return
        for rel in _large_folders(os.path.join(root, ".pivot", "state.db")):
            top = os.path.join(root, rel)
            fd = os.open(top, _DIR_FLAGS)
            try:
                _ahead[top] = _Ahead(fd)
            except BaseException:
                os.close(fd)
                raise
    except (OSError, ValueError, ImportError):
        close_window()
        return
    _window["open"] = True
    import atexit

    atexit.register(close_window)


def held(top: str) -> bool:
    """Whether a helper holds stats of the folder `top` not claimed yet (taken before any
    racy marker this process made later: `snapshot` then judges them by time alone)."""
    return top in _ahead


def claim(top: str, fd: int) -> tuple[list[str], array] | None:
    """The names and rows of the folder `top` (open as `fd`) from its helper, if one was
    started and the plan's window is open; at most once per folder."""
    ahead = _ahead.pop(top, None)
    if ahead is None:
        return None
    try:
        return ahead.take(fd) if _window["open"] else None
    except (OSError, ValueError):
        return None
    finally:
        ahead.close()


def close_window() -> None:
    """End every helper not claimed yet; later checks list their folders anew."""
    _window["open"] = False
    while _ahead:
        _ahead.popitem()[1].close()


def _root(start: str) -> str | None:
    """The top-most folder at or above `start` that holds `.pivot/` (`project.find_root`)."""
    found = None
    path = start
    while True:
        if os.path.isdir(os.path.join(path, ".pivot")):
            found = path
        parent = os.path.dirname(path)
        if parent == path:
            return found
        path = parent


def _large_folders(state_path: str) -> list[str]:
    """The folders whose stored snapshot lists MIN_FILES files or more (largest first), as
    plain relative paths (any other key is skipped)."""
    if not os.path.isfile(state_path):
        return []
    if not (os.access(state_path, os.W_OK) and os.access(os.path.dirname(state_path), os.W_OK)):
        return []  # the command reads none of it (`StateDB.refused`); sqlite would leave files
    import sqlite3

    try:
        conn = sqlite3.connect(state_path, timeout=0)
        try:
            keys = conn.execute(
                "SELECT key FROM kv WHERE namespace = ? AND length(value) >= ? "
                "ORDER BY length(value) DESC LIMIT ?",
                (SNAPSHOTS, MIN_FILES * ROW, MAX_FOLDERS),
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [
        key
        for (key,) in keys
        if isinstance(key, str)
        and "\0" not in key
        and not key.startswith("/")
        and all(part not in ("", ".", "..", ".pivot", ".git") for part in key.split("/"))
    ]
