"""Directory snapshots: for each directory whose tree manifest hash was computed, the
(path, size, mtime, ctime, inode, mode) of every file at that moment, kept in the state db
with the hash. A later listing whose stats are the same, byte for byte, reuses the hash: one
`stat` per file and one comparison of two byte strings, instead of a stat-cache lookup, a
manifest entry, the manifest's encoding and its hash. Any difference, and any snapshot that
is absent, damaged or not this format, means the full check through the stat cache, after
which the snapshot is written anew (one sqlite transaction, so never half-written). A run
also leaves the snapshot of each directory output it stores (`of_stored`, from the stats the
storing read the files under), so the first no-op after it is settled by the snapshot.

Why each field: a same-size rewrite that keeps the mtime (`cp -p`, `tar -x`, `touch -r`)
still changes the ctime, which no program can set; a file replaced by another changes the
inode; a chmod changes the ctime and the mode; an added, removed or renamed file changes
the paths. A directory's own mtime proves nothing about the content of its files (a rewrite
in place leaves it unchanged), so every file is still stat-ed."""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
import time
from array import array
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import attrgetter
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import TYPE_CHECKING

import blake3

from pivot import _racy
from pivot._helper_procs import memory_file, usable_cores
from pivot.cache import prestat
from pivot.cache.hashing import DIR, Hasher, PathHash, link_target
from pivot.errors import DiskFull

if TYPE_CHECKING:
    import pathlib

    from pivot.cache.state import StateDB

log = logging.getLogger(__name__)

NAMESPACE = "tree-snapshot"  # the state db's key/value namespace, keyed by directory path
MAGIC = b"pivot-tree-snapshot-1\n"
# The manifest hash (raw), the total size, the lengths of the paths and of the stats.
HEADER = struct.Struct("<32sQQQ")
CHECKSUM = 32  # BLAKE3 of header + paths + stats, after MAGIC
FIELDS = 5  # stats per file: size, mtime_ns, ctime_ns, inode, mode
_STAT_FIELDS = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_mode")
_FIELDS = attrgetter(*_STAT_FIELDS)
_DEVICE = attrgetter("st_dev")
ITEM = array("q").itemsize
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# A folder with at least this many entries per process is stat-ed in parts, one by this
# process and the others by helper processes at the same time (the kernel's `fstatat` is
# most of a large no-op: on 2 cores this takes about 40 % off the listing's wall time).
HELPER_MIN = 20_000
MAX_HELPERS = 3
# A helper: stats the NUL-separated names on its stdin relative to the folder descriptor it
# inherited, without following links, and writes their packed rows (the rows `_rows` makes).
_HELPER = f"""\
import os, sys
from array import array
from functools import partial
from itertools import chain
from operator import attrgetter
fields = attrgetter(*{_STAT_FIELDS!r})
lstat = partial(os.stat, dir_fd=int(sys.argv[1]), follow_symlinks=False)
names = sys.stdin.buffer.read().split(b"\\0")
sys.stdout.buffer.write(array("q", chain.from_iterable(map(fields, map(lstat, names)))).tobytes())
"""
# A file changed this recently (ctime) may be written again within the same timestamp
# tick after its stat, unseen by a later stat; a snapshot is not written while the
# directory holds such a file (2 s covers coarse clocks and 1-2 s file systems), unless a
# racy marker made before the scan shows every file changed before it (`pivot._racy`).
RACY_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class Listing:
    """The files of a directory as a snapshot compares them."""

    paths: bytes  # inner POSIX paths joined by NUL, UTF-8 (undecodable bytes kept)
    rows: array  # FIELDS signed 64-bit integers per file, in the order of `paths`
    newest_ctime: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A directory's listing when its tree manifest had `hash` and total `size`."""

    hash: str
    size: int
    paths: bytes
    stats: bytes


def scan(
    top: str, what: str, helper_min: int = HELPER_MIN, linked: list[str] | None = None
) -> tuple[list[str], array]:
    """The files of `Hasher.tree_files` under the folder `top` (`what` names it in an
    error): their inner paths and their packed stat rows (FIELDS values each, no
    `os.stat_result` kept). Each folder is listed by name through a descriptor and its
    entries stat-ed relative to it (`fstatat`, links not followed) in one pass in C; a
    folder of `helper_min` entries or more per process is stat-ed in parts at the same
    time by helper processes (the top folder's by the one `prestat` started, if any). The
    inner path of each link followed to a file is added to `linked` when given.
    Raises OverflowError if a value does not fit 64 bits."""
    paths: list[str] = []
    rows = array("q")
    folders = [""]
    while folders:
        folder = folders.pop()
        prefix = f"{folder}/" if folder else ""
        fd = os.open(f"{top}/{folder}" if folder else top, _DIR_FLAGS)
        try:
            ahead = None if folder else prestat.claim(top, fd)
            if ahead is None:
                names = os.listdir(fd)
                found = _rows_in_parts(fd, names, helper_min)
            else:
                names, found = ahead
            if not all(map(S_ISREG, found[FIELDS - 1 :: FIELDS])):
                names, found = _files_only(top, fd, prefix, names, found, what, folders, linked)
        finally:
            os.close(fd)
        if paths or prefix:
            paths += map(prefix.__add__, names) if prefix else names
            rows += found
        else:  # the top folder's own lists, not copies (most outputs have one folder)
            paths, rows = names, found
    return paths, rows


def _rows(fd: int, names: list[str]) -> array:
    """The packed stat rows of the entries `names` of the folder `fd`, links not followed."""
    lstat = partial(os.stat, dir_fd=fd, follow_symlinks=False)
    return array("q", chain.from_iterable(map(_FIELDS, map(lstat, names))))


def _files_only(
    top: str,
    fd: int,
    prefix: str,
    names: list[str],
    rows: array,
    what: str,
    folders: list[str],
    linked: list[str] | None,
) -> tuple[list[str], array]:
    """The entries of a folder that are not all regular files, as `Hasher.tree_files`
    counts them: a subfolder goes to `folders`, a link to a folder is not followed, a link
    to a file counts as that file (a link to nothing is a DefinitionError)."""
    kept: list[str] = []
    kept_rows = array("q")
    for k, name in enumerate(names):
        row = rows[k * FIELDS : (k + 1) * FIELDS]
        if S_ISDIR(row[FIELDS - 1]):
            folders.append(prefix + name)
            continue
        if S_ISLNK(row[FIELDS - 1]):
            try:
                target = os.stat(name, dir_fd=fd)
            except OSError:
                link_target(os.path.join(top, prefix + name), what)
                raise
            if S_ISDIR(target.st_mode):
                continue
            row = array("q", _FIELDS(target))
            if linked is not None:
                linked.append(prefix + name)
        kept.append(name)
        kept_rows += row
    return kept, kept_rows


def _rows_in_parts(fd: int, names: list[str], helper_min: int) -> array:
    """`_rows(fd, names)`, the kernel's work shared with helper processes when the folder
    is large enough and there are cores for them; a helper that fails has its part done
    here (which raises the real error, if any)."""
    parts = min(len(names) // helper_min, usable_cores(), MAX_HELPERS + 1) if helper_min else 1
    if parts < 2 or not sys.executable:
        return _rows(fd, names)
    # This process starts at once, each helper after an interpreter's start-up (about as
    # long as stat-ing a fifth of `helper_min` names): this process takes that many more.
    first = -(-len(names) // parts) + helper_min // 5 * (parts - 1) // parts
    step = -(-(len(names) - first) // (parts - 1))
    chunks = [names[:first]] + [names[k : k + step] for k in range(first, len(names), step)]
    helpers: list[_Helper] = []
    try:
        helpers += (_Helper(fd, chunk) for chunk in chunks[1:])
        rows = _rows(fd, chunks[0])
        outputs = [helper.output() for helper in helpers]
    finally:  # on any exit (a Ctrl-C too): no helper is left running or unreaped
        for helper in helpers:
            helper.close()
    for chunk, out in zip(chunks[1:], outputs, strict=True):
        if out is None or len(out) != len(chunk) * FIELDS * ITEM:
            out = _rows(fd, chunk).tobytes()
        rows.frombytes(out)
    return rows


class _Helper:
    """A helper process stat-ing `names` in the folder `fd` (which it inherits). It reads
    the names from a file in memory, so starting it never waits on it, and its rows wait
    in its output pipe until this process is done with its own part."""

    def __init__(self, fd: int, names: list[str]) -> None:
        import subprocess  # only large folders start helpers

        self._proc: subprocess.Popen[bytes] | None = None
        try:
            with memory_file("\0".join(names).encode("utf-8", "surrogateescape")) as names_in:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _HELPER, str(fd)],
                    stdin=names_in,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(fd,),
                )
        except OSError as exc:
            log.debug(f"No stat helper: {exc}")

    def output(self) -> bytes | None:
        """The packed rows the helper wrote, or None if it failed."""
        if self._proc is None:
            return None
        assert self._proc.stdout is not None
        out = self._proc.stdout.read()
        return out if self._proc.wait() == 0 else None

    def close(self) -> None:
        """End the helper if it still runs, reap it and close its pipe."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self._proc.kill()  # a no-op once it has exited; it is reaped just below
        self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()


def listing(paths: list[str], rows: array) -> Listing:
    """The listing of the files `scan` found."""
    encoded = "\0".join(paths).encode("utf-8", "surrogateescape")
    return Listing(encoded, rows, max(rows[2::FIELDS], default=0))


def as_stat(rows: array, k: int) -> os.stat_result:
    """The `k`-th row of `rows` as an `os.stat_result` for the full check: the fields the
    stat cache and the manifest read (size, mtime_ns, ctime_ns, inode, mode), the others
    zero."""
    size, mtime, ctime, ino, mode = rows[k * FIELDS : (k + 1) * FIELDS]
    second = 1_000_000_000
    return os.stat_result(
        (mode, ino, 0, 0, 0, 0, size, 0, mtime // second, ctime // second),
        {"st_mtime_ns": mtime, "st_ctime_ns": ctime},
    )


def encode(snapshot: Snapshot) -> bytes:
    body = (
        HEADER.pack(
            bytes.fromhex(snapshot.hash), snapshot.size, len(snapshot.paths), len(snapshot.stats)
        )
        + snapshot.paths
        + snapshot.stats
    )
    return MAGIC + blake3.blake3(body).digest() + body


def _layout(blob: bytes) -> tuple[bytes, int, int, int] | None:
    """(raw manifest hash, total size, offset of the paths, offset of the stats) of the
    snapshot `blob`, or None if it is not an intact one of this format."""
    start = len(MAGIC) + CHECKSUM
    if len(blob) < start + HEADER.size or not blob.startswith(MAGIC):
        return None
    body = memoryview(blob)[start:]
    if blake3.blake3(body).digest() != blob[len(MAGIC) : start]:
        return None
    digest, size, paths_len, stats_len = HEADER.unpack_from(body)
    if HEADER.size + paths_len + stats_len != len(body) or stats_len % (FIELDS * ITEM):
        return None
    at = start + HEADER.size
    files = stats_len // (FIELDS * ITEM)
    if (blob.count(b"\0", at, at + paths_len) + 1 if paths_len else 0) != files:
        return None
    return digest, size, at, at + paths_len


def decode(blob: bytes) -> Snapshot | None:
    """The snapshot `blob` holds, or None if it is not an intact one of this format (the
    caller then checks the directory in full)."""
    layout = _layout(blob)
    if layout is None:
        return None
    digest, size, at, stats_at = layout
    return Snapshot(digest.hex(), size, blob[at:stats_at], blob[stats_at:])


def settles(blob: bytes, current: Listing) -> PathHash | None:
    """The directory's hash if `blob` is an intact snapshot of exactly the listing
    `current` (compared in place: the stored listing is not copied out)."""
    layout = _layout(blob)
    if layout is None:
        return None
    digest, size, at, stats_at = layout
    stats_len = len(current.rows) * ITEM
    if (
        stats_at - at == len(current.paths)
        and len(blob) - stats_at == stats_len
        and blob.startswith(current.paths, at)
        and blob.startswith(current.rows, stats_at)
    ):
        return PathHash(digest.hex(), size, DIR)
    return None


def load(state: StateDB, rel: str) -> Snapshot | None:
    blob = state.get(NAMESPACE, rel)
    return decode(blob) if isinstance(blob, bytes) else None


def save(state: StateDB, rel: str, snapshot: Snapshot) -> None:
    """Store the snapshot of `rel` (a disk too full for it only costs the next command a
    full check)."""
    try:
        state.put(NAMESPACE, rel, encode(snapshot))
    except DiskFull as exc:
        log.debug(f"No snapshot of {rel}: {exc}")


def _before(made: tuple[int, int] | None, top: str, current: Listing, linked: list[str]) -> bool:
    """Whether every file of `current` (the listing of the folder `top`, stat-ed after the
    racy marker `made`) changed before the marker; False when there is none, or when a file
    may be on another device than the marker: the folder is, a link was followed (`linked`)
    or a file system is mounted within the folder."""
    if made is None or linked or _racy.mounted_within(top):
        return False
    try:
        return os.stat(top).st_dev == made[0] and current.newest_ctime < made[1]
    except OSError:
        return False


def of_stored(
    made: tuple[int, int] | None,
    top: str,
    inner: list[str],
    stats: list[os.stat_result | None],
    linked: bool,
    found: PathHash,
) -> Snapshot | None:
    """The snapshot of the folder `top` as it was just stored: its files `inner` (in the
    order `scan` lists them) under the stats `stats` they were read with (taken after the
    racy marker `made`), and `found`, its manifest hash and total size; None unless every
    file is a regular file on the marker's device that changed before the marker, none is
    a link (`linked`) and no file system is mounted within the folder. A file changed at
    the marker's time or later (the same tick), or read while it changed (no stat), leaves
    no snapshot: the next command checks the folder in full and writes it."""
    if made is None or linked or None in stats:
        return None
    device, marker = made
    try:
        rows = array("q", chain.from_iterable(map(_FIELDS, stats)))  # type: ignore[arg-type]
    except OverflowError:
        return None
    if (
        max(rows[1::FIELDS], default=0) >= marker
        or max(rows[2::FIELDS], default=0) >= marker
        or not all(map(S_ISREG, rows[FIELDS - 1 :: FIELDS]))
        or set(map(_DEVICE, stats)) != {device}
        or _racy.mounted_within(top)
    ):
        return None
    try:
        if os.stat(top).st_dev != device:
            return None
    except OSError:
        return None
    paths = "\0".join(inner).encode("utf-8", "surrogateescape")
    return Snapshot(found.hash, found.size, paths, rows.tobytes())


class SnapshotHasher(Hasher):
    """A `Hasher` that settles a directory by its snapshot when the files' stats match."""

    def __init__(
        self,
        root: pathlib.Path,
        state: StateDB,
        racy_ns: int = RACY_NS,
        helper_min: int = HELPER_MIN,
        marker_dir: str | None = None,
    ) -> None:
        super().__init__(root, state, marker_dir)
        self.state = state
        self.racy_ns = racy_ns
        self.helper_min = helper_min
        # The command's racy marker (`pivot._racy`), made before the first scan that may
        # use it; None: the 2 s rule alone.
        self.marker = None if marker_dir is None else _racy.Marker(marker_dir)
        self._lock = threading.Lock()  # pull places outputs from several threads

    def tree_hash(self, rel: str) -> PathHash:
        started = time.time_ns()
        top = os.path.join(self.root, rel)
        made = None  # the racy marker, made before this scan's stats
        linked: list[str] = []  # links followed by the scan: their files' devices unknown
        if self.marker is not None and not prestat.held(top):
            made = self.marker.made()
        try:
            paths, rows = scan(top, f"The directory {rel}", self.helper_min, linked)
        except OverflowError:  # a value beyond 64 bits: such a directory is always checked in full
            return super().tree_hash(rel)
        current = listing(paths, rows)
        with self._lock:
            blob = self.state.get(NAMESPACE, rel)
        settled = settles(blob, current) if isinstance(blob, bytes) else None
        if settled is not None:
            return settled
        files = [(path, as_stat(rows, k)) for k, path in enumerate(paths)]
        found = self.manifest_hash(rel, files)
        if current.newest_ctime < started - self.racy_ns or _before(made, top, current, linked):
            with self._lock:
                save(
                    self.state,
                    rel,
                    Snapshot(found.hash, found.size, current.paths, current.rows.tobytes()),
                )
        return found
