"""The temps of atomic writes a killed command left in Pivot's state folders, found without
listing every folder each time.

`Project.stale_temps` looks for `.NAME.XXXX.tmp` files among the lock files, the run
records (256 shard folders once a project has some history) and the tracked-data records,
under the command lock of every command that writes. Listing all those folders is a few
milliseconds per command; most of them did not change since the last command. A folder's
mtime and ctime change whenever an entry is added to it, renamed or removed, so a folder
whose (mtime, ctime, inode) are those it had when it was listed and held no temp still
holds none, and the subfolders it had: `temp_files` then takes one `stat` of it instead of
a listing.

The memo of those folders (`swept.json` in the project's tmp folder) is a cache like any
file under `.pivot/`: anything but the exact shape `_load` expects is read as empty (every
folder listed), a folder changed since is listed, and a folder changed too recently is
never remembered (a coarse file-system clock may not have moved yet when the next entry
arrives): one changed at or after the command's racy marker in the tmp folder
(`pivot._racy`, made before the first listing), or, where the marker does not apply,
within 3 s of its listing. A memo that wrongly called a folder clean could only leave a
temp file in place until that folder next changes: it never hides an output, a lock or a
record.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import stat
import time

from pivot import _racy
from pivot._fs import read_own_file, write_bytes
from pivot.errors import DiskFull

MEMO = "swept.json"
FORMAT = 1
_MAX_BYTES = 64 << 20
RACY_NS = 3_000_000_000

_Key = tuple[int, int, int]


def temp_files(
    tops: list[str], memo_dir: str, racy_ns: int = RACY_NS, marked: bool = True
) -> list[str]:
    """The `.NAME.XXXX.tmp` files in the folders `tops` and every folder below them (links
    not followed; a top that is a link is left out); folders unchanged since they were last
    listed clean are not listed again (see the module's docstring). Without `marked`, only
    the 3 s rule judges a folder changed recently."""
    memo_path = os.path.join(memo_dir, MEMO)
    known = _load(memo_path)
    marker = _racy.Marker(memo_dir) if marked else None
    kept: dict[str, tuple[_Key, list[str]]] = {}
    found: list[str] = []
    now = time.time_ns()
    folders = [top for top in tops if not os.path.islink(top)]
    while folders:
        folder = folders.pop()
        try:
            st = os.lstat(folder)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):  # a link put where a folder was: not entered
            continue
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        hit = known.get(folder)
        if hit is not None and hit[0] == key:
            kept[folder] = hit
            prefix = folder + os.sep
            folders += [prefix + name for name in hit[1]]
            continue
        made = None if marker is None else marker.made()
        if made is not None:  # the folder's key is taken again, after the marker
            try:
                st = os.lstat(folder)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            key = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:  # gone, or not readable: skipped, as `os.walk` did
            continue
        below, temps = [], []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                below.append(entry.name)
            elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                temps.append(entry.path)
        prefix = folder + os.sep
        folders += [prefix + name for name in below]
        found += temps
        if temps:
            continue
        settled = _racy.before(made, st)
        if settled is None:  # no marker for it: the 3 s rule
            settled = now - max(st.st_mtime_ns, st.st_ctime_ns) > racy_ns
        if settled:
            kept[folder] = (key, below)
    if kept != known:
        _store(memo_path, kept)
    return found


def _load(path: str) -> dict[str, tuple[_Key, list[str]]]:
    """The memo at `path`, or {} when it is absent or not exactly what `_store` writes."""
    data = read_own_file(path, _MAX_BYTES)
    if data is None:
        return {}
    try:
        raw = json.loads(data)
        if raw["format"] != FORMAT:
            return {}
        memo = {}
        for folder, key, below in raw["folders"]:
            mtime, ctime, ino = key
            if not (
                type(folder) is str
                and type(mtime) is int
                and type(ctime) is int
                and type(ino) is int
                and type(below) is list
            ):
                return {}
            for name in below:
                if not _plain_name(name):
                    return {}
            memo[folder] = ((mtime, ctime, ino), below)
        return memo
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return {}


def _plain_name(name: object) -> bool:
    """Whether `name` is the name of an entry of a folder (never `..`: the walk stays below
    its tops whatever the memo says)."""
    return (
        type(name) is str and name not in ("", ".", "..") and "/" not in name and "\0" not in name
    )


def _store(path: str, memo: dict[str, tuple[_Key, list[str]]]) -> None:
    """Write the memo (a project that cannot be written is only slower)."""
    record = {
        "format": FORMAT,
        "folders": [[folder, list(key), below] for folder, (key, below) in sorted(memo.items())],
    }
    with contextlib.suppress(OSError, DiskFull):
        write_bytes(pathlib.Path(path), json.dumps(record).encode(), sync=False)
