"""The decoded lock files of a project, kept between commands in one file
(`locks.msgpack` in the project's tmp folder), so that a run of many stages `stat`s each
lock file instead of reading and decoding it.

Each entry is a lock file's stage id, the stat key (size, mtime, ctime, inode) of the file
when it was read and its decoded JSON. `load` hands the entries to `lockfile.remember`,
as the lock file helper's rows are: `read_lock` uses one only while its file's stat key is
unchanged (a rewrite that keeps size and mtime changes ctime or inode), and validates it
with `lockfile.lock_from_json` like a file read from disk. A lock file changed too
recently is never remembered (`read_validated`: at or after the command's racy marker was
made, or within 3 s of its reading without one; see `lockfile.use_marker`). The memo is
untrusted: one of any other shape, truncated, of another stages folder (its device and
inode are recorded), or with a stage id that is not a plain relative path, is ignored
whole and every lock file is read. `store` writes it (atomically, after the command's
work, under the command lock) only when what the command read differs from what it
loaded.
"""

from __future__ import annotations

import array
import contextlib
import os
import pathlib
import re
from typing import Any

from pivot._fs import read_own_file, write_bytes
from pivot.errors import DiskFull
from pivot.run import lockfile

NAME = "locks.msgpack"
FORMAT = "pivot-lock-memo-1"
_MAX_BYTES = 1 << 30  # far above any project's lock files together

# Stage ids joined by NUL: plain relative paths (no empty, "." or ".." part, no backslash).
_PLAIN_IDS = re.compile(r"(?!\.\.?(?:/|\0|$))[^/\0\\]+(?:[/\0](?!\.\.?(?:/|\0|$))[^/\0\\]+)*")
# The stat keys of the entries `load` handed over (or `store` wrote), by lock file name.
_LOADED: dict[str, tuple[int, ...]] = {}


def exists(tmp_dir: pathlib.Path) -> bool:
    """Whether the project has a memo (the lock file helper is then not started)."""
    return os.path.exists(os.path.join(tmp_dir, NAME))


def load(stages_dir: pathlib.Path, tmp_dir: pathlib.Path) -> int:
    """Hand the memo's entries to `lockfile.remember`; how many (0 when it is absent or
    unusable)."""
    _LOADED.clear()
    rows = _read(str(stages_dir), os.path.join(tmp_dir, NAME))
    if not rows:
        return 0
    lockfile.remember(rows)
    for name, key, _ in rows:
        _LOADED[name] = key
    return len(rows)


def _read(stages_dir: str, path: str) -> list[tuple[str, tuple[int, ...], Any]]:
    data = read_own_file(path, _MAX_BYTES)
    if data is None:
        return []
    try:
        import msgpack

        form, folder, ids, keys, raws = msgpack.unpackb(data)
        if form != FORMAT or folder != _folder_key(stages_dir):
            return []
        joined = "\0".join(ids)  # TypeError unless every id is a string
        flat = array.array("q", keys)  # TypeError unless every number is an integer
        if len(flat) != 4 * len(ids) or len(raws) != len(ids) or not _PLAIN_IDS.fullmatch(joined):
            return []
        prefix = os.path.join(stages_dir, "")
        return [
            (f"{prefix}{stage_id}.lock", tuple(flat[4 * i : 4 * i + 4]), raw)
            for i, (stage_id, raw) in enumerate(zip(ids, raws, strict=True))
        ]
    except Exception:  # absent, unreadable or of any other shape: every lock file is read
        return []


def store(stages_dir: pathlib.Path, tmp_dir: pathlib.Path) -> None:
    """Write the memo of the lock files this process read and validated (`read_lock`'s
    own memo) and of the entries handed over but never asked for (a run of one pipeline
    keeps the others'), when it differs from the one loaded; a lock file found absent or
    changed is left out (one never asked for, when the memo is written). A project that
    cannot be written is only slower."""
    prefix = os.path.join(stages_dir, "")
    unclaimed = {name: (tuple(key), raw) for name, key, raw in lockfile.unclaimed()}
    read = lockfile.memoised()
    stat_keys = {name: key for name, (key, _) in unclaimed.items()}
    stat_keys.update((name, key) for name, (key, _) in read.items())
    stat_keys = {
        name: key
        for name, key in stat_keys.items()
        if name.startswith(prefix) and name.endswith(".lock")
    }
    if stat_keys == _LOADED:
        return
    for name in [name for name in stat_keys if name not in read]:
        try:
            st = os.stat(name)
        except OSError:
            st = None
        if st is None or (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != stat_keys[name]:
            del stat_keys[name]  # gone or changed since: of no use to the next command
    names = sorted(stat_keys)
    ids = [name[len(prefix) : -len(".lock")] for name in names]
    flat = [n for name in names for n in stat_keys[name]]
    raws = [read[name][1].body() if name in read else unclaimed[name][1] for name in names]
    import msgpack

    try:
        data = msgpack.packb([FORMAT, _folder_key(str(stages_dir)), ids, flat, raws])
    except (TypeError, ValueError, OverflowError):  # a value msgpack cannot hold
        return
    with contextlib.suppress(OSError, DiskFull):
        write_bytes(pathlib.Path(tmp_dir, NAME), data, sync=False)
    _LOADED.clear()
    _LOADED.update(stat_keys)


def _folder_key(stages_dir: str) -> list[int]:
    """The stages folder's device and inode: a memo copied with the project (or of another
    project) does not apply."""
    try:
        st = os.stat(stages_dir)
    except OSError:
        return [-1, -1]
    return [st.st_dev, st.st_ino]
