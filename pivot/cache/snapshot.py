"""Directory snapshots: for each directory whose tree manifest hash was computed, the
(path, size, mtime, ctime, inode, mode) of every file at that moment, kept in the state db
with the hash. A later listing whose stats are the same, byte for byte, reuses the hash: one
`stat` per file and one comparison of two byte strings, instead of a stat-cache lookup, a
manifest entry, the manifest's encoding and its hash. Any difference, and any snapshot that
is absent, damaged or not this format, means the full check through the stat cache, after
which the snapshot is written anew (one sqlite transaction, so never half-written).

Why each field: a same-size rewrite that keeps the mtime (`cp -p`, `tar -x`, `touch -r`)
still changes the ctime, which no program can set; a file replaced by another changes the
inode; a chmod changes the ctime and the mode; an added, removed or renamed file changes
the paths. A directory's own mtime proves nothing about the content of its files (a rewrite
in place leaves it unchanged), so every file is still stat-ed."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from array import array
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING

import blake3

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
_FIELDS = attrgetter("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_mode")
ITEM = array("q").itemsize
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# A file changed this recently (ctime) may be written again within the same timestamp
# tick after its stat, unseen by a later stat; a snapshot is not written while the
# directory holds such a file (2 s covers coarse clocks and 1-2 s file systems).
RACY_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class Listing:
    """The files of a directory as a snapshot compares them."""

    paths: bytes  # inner POSIX paths joined by NUL, UTF-8 (undecodable bytes kept)
    stats: bytes  # FIELDS signed 64-bit integers per file, in the order of `paths`
    newest_ctime: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A directory's listing when its tree manifest had `hash` and total `size`."""

    hash: str
    size: int
    paths: bytes
    stats: bytes

    def matches(self, listing: Listing) -> bool:
        return self.stats == listing.stats and self.paths == listing.paths


def scan(top: str, what: str) -> tuple[list[str], list[os.stat_result]]:
    """The files of `Hasher.tree_files` under the folder `top` (`what` names it in an
    error), as two lists: inner paths and stats. Each folder is listed through a
    descriptor and its files stat-ed relative to it (`fstatat`: the kernel does not walk
    the whole path again for each file), its regular files in bulk."""
    names: list[str] = []
    stats: list[os.stat_result] = []
    folders = [""]
    while folders:
        folder = folders.pop()
        prefix = f"{folder}/" if folder else ""
        fd = os.open(f"{top}/{folder}" if folder else top, _DIR_FLAGS)
        try:
            with os.scandir(fd) as found:
                entries = list(found)
            regular = [e for e in entries if e.is_file(follow_symlinks=False)]
            stats += [e.stat() for e in regular]
            names += [prefix + e.name for e in regular] if prefix else [e.name for e in regular]
            if len(regular) == len(entries):
                continue
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    continue
                inner = prefix + entry.name
                if entry.is_dir():
                    if not entry.is_symlink():
                        folders.append(inner)
                    continue
                if entry.is_symlink():
                    link_target(os.path.join(top, inner), what)
                names.append(inner)
                stats.append(entry.stat())
        finally:
            os.close(fd)
    return names, stats


def listing(names: list[str], stats: list[os.stat_result]) -> Listing | None:
    """The listing of the files `scan` found; None if a value does not fit 64 bits (such a
    directory is always checked in full)."""
    paths = "\0".join(names).encode("utf-8", "surrogateescape")
    try:
        values = array("q", chain.from_iterable(map(_FIELDS, stats)))
    except OverflowError:
        return None
    return Listing(paths, values.tobytes(), max(values[2::FIELDS], default=0))


def encode(snapshot: Snapshot) -> bytes:
    body = (
        HEADER.pack(
            bytes.fromhex(snapshot.hash), snapshot.size, len(snapshot.paths), len(snapshot.stats)
        )
        + snapshot.paths
        + snapshot.stats
    )
    return MAGIC + blake3.blake3(body).digest() + body


def decode(blob: bytes) -> Snapshot | None:
    """The snapshot `blob` holds, or None if it is not an intact one of this format (the
    caller then checks the directory in full)."""
    start = len(MAGIC) + CHECKSUM
    if len(blob) < start + HEADER.size or not blob.startswith(MAGIC):
        return None
    body = memoryview(blob)[start:]
    if blake3.blake3(body).digest() != blob[len(MAGIC) : start]:
        return None
    digest, size, paths_len, stats_len = HEADER.unpack_from(body)
    if HEADER.size + paths_len + stats_len != len(body) or stats_len % (FIELDS * ITEM):
        return None
    paths = bytes(body[HEADER.size : HEADER.size + paths_len])
    stats = bytes(body[HEADER.size + paths_len :])
    files = stats_len // (FIELDS * ITEM)
    if (paths.count(b"\0") + 1 if paths else 0) != files:
        return None
    return Snapshot(digest.hex(), size, paths, stats)


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


class SnapshotHasher(Hasher):
    """A `Hasher` that settles a directory by its snapshot when the files' stats match."""

    def __init__(self, root: pathlib.Path, state: StateDB, racy_ns: int = RACY_NS) -> None:
        super().__init__(root, state)
        self.state = state
        self.racy_ns = racy_ns
        self._lock = threading.Lock()  # pull places outputs from several threads

    def tree_hash(self, rel: str) -> PathHash:
        started = time.time_ns()
        names, stats = scan(os.path.join(self.root, rel), f"The directory {rel}")
        current = listing(names, stats)
        if current is not None:
            with self._lock:
                known = load(self.state, rel)
            if known is not None and known.matches(current):
                return PathHash(known.hash, known.size, DIR)
        found = self.manifest_hash(rel, list(zip(names, stats, strict=True)))
        if current is not None and current.newest_ctime < started - self.racy_ns:
            with self._lock:
                save(
                    self.state, rel, Snapshot(found.hash, found.size, current.paths, current.stats)
                )
        return found
