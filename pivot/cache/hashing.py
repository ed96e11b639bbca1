"""BLAKE3 hashing: of bytes, of files read in bounded chunks, and while copying (the one
hash-while-copying helper, for descriptors and for streams); tree manifests (the msgpack
list of a directory output's files); and `Hasher`, which hashes project paths through the
state db's stat cache so that an unchanged file is not read again."""

from __future__ import annotations

import os
import pathlib
import re
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

import blake3
import msgpack

from pivot import _racy
from pivot.errors import CorruptFile, DefinitionError
from pivot.project import first_overlap, safe_relpath
from pivot.untrusted import LIMIT, count

if TYPE_CHECKING:
    from collections.abc import Iterable

HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]*")
# File data is read, hashed, copied and streamed in pieces of this size: RSS stays bounded
# whatever the file size (an mmap would map the whole file into RSS), at the same ~3 GB/s
# as mmap on a warm cache.
CHUNK = 4 << 20
FILE = "file"
DIR = "dir"


def hash_bytes(data: bytes | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


_pool_started_in: int | None = None  # pid of the process that started BLAKE3's threads
_pool_inherited = False  # this process was forked from one that had started them


def _after_fork_in_child() -> None:
    global _pool_inherited
    _pool_inherited = _pool_inherited or _pool_started_in is not None


os.register_at_fork(after_in_child=_after_fork_in_child)


def new_hasher(data: bytes | memoryview = b"") -> blake3.blake3:
    """A BLAKE3 hasher for large inputs: multi-threaded, except in a process forked after
    its thread pool started (the pool's threads do not survive a fork, and waiting on them
    would hang for ever), where it hashes on one thread."""
    global _pool_started_in
    if _pool_inherited:
        return blake3.blake3(data)
    _pool_started_in = os.getpid()
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO)


def hash_file(path: pathlib.Path | str) -> str:
    """BLAKE3 of a file's content, read in bounded chunks (see `new_hasher`)."""
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < CHUNK:
            data = handle.read(size + 1)
            if len(data) <= size:  # the whole file (it did not grow since the stat)
                return blake3.blake3(data).hexdigest()
            hasher = new_hasher(data)
        else:
            hasher = new_hasher()
        return copy_hashing(handle.fileno(), None, hasher=hasher)[1]


def copy_hashing(
    source: int, target: int | None, size: int = -1, hasher: blake3.blake3 | None = None
) -> tuple[int, str]:
    """Copy file descriptor `source` to `target` from their offsets while hashing what is
    copied (only hash it when `target` is None); returns (bytes copied, BLAKE3 hex).

    `size` (if known, else the source's size now) sizes the buffer: a 4 MB one per small
    file cost more than copying it. `hasher` continues a hash begun on earlier bytes
    (default: a new one on the calling thread, which starts no thread pool, so the process
    may fork afterwards).
    """
    hasher = hasher or blake3.blake3()
    if size < 0:  # a file that grew meanwhile is read on in the loop
        st = os.fstat(source)
        size = st.st_size if stat.S_ISREG(st.st_mode) else CHUNK
    buffer = bytearray(min(CHUNK, size + 1))
    view = memoryview(buffer)
    copied = 0
    while n := os.readv(source, [buffer]):
        hasher.update(view[:n])
        if target is not None:
            out = view[:n]
            while out:
                out = out[os.write(target, out) :]
        copied += n
    return copied, hasher.hexdigest()


def stream_hashing(source: BinaryIO, target: BinaryIO) -> tuple[int, str]:
    """`copy_hashing` for file objects without a descriptor (a remote's response, a zstd
    reader): copy `source` to `target` in reads of CHUNK; returns (bytes, BLAKE3 hex)."""
    hasher = blake3.blake3()
    size = 0
    while chunk := source.read(CHUNK):
        hasher.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return size, hasher.hexdigest()


def is_hash(value: object) -> bool:
    return isinstance(value, str) and HASH_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One file of a directory output."""

    relpath: str
    hash: str
    size: int
    mode: int


def encode_tree(entries: Iterable[TreeEntry]) -> bytes:
    """Deterministic msgpack manifest of a tree, sorted by relpath."""
    return encode_tree_rows([(e.relpath, e.hash, e.size, e.mode) for e in entries])


def encode_tree_rows(rows: list[tuple[str, str, int, int]]) -> bytes:
    """`encode_tree` of (relpath, hash, size, checkout mode) rows (sorted here). A name
    that is not UTF-8 is encoded by its bytes, so a workspace tree holding one hashes to a
    manifest no stored tree has (storing refuses such names, `project.checked_relpath`)."""
    return msgpack.packb(sorted(rows), use_bin_type=True, unicode_errors="surrogateescape")


def decode_tree(data: bytes, what: str) -> list[TreeEntry]:
    """Parse a manifest, refusing paths that could escape the tree. Each mode becomes
    0o755 or 0o644 (by its owner's executable bit, as `file_mode` records it): no other
    bits from a manifest ever reach a checkout."""
    try:
        rows = msgpack.unpackb(data, raw=False)
        entries = []
        for r in rows:
            size, mode = r[2], r[3]
            # The plain case checked inline (a call per field was a tenth of decoding a
            # 100,000-entry manifest); anything else gets `count`'s checks and message.
            plain = type(size) is int and type(mode) is int
            if not (plain and 0 <= size < LIMIT and 0 <= mode < LIMIT):
                size, mode = count(size), count(mode)
            entries.append(TreeEntry(str(r[0]), str(r[1]), size, 0o755 if mode & 0o100 else 0o644))
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException) as exc:
        raise CorruptFile(f"The tree manifest {what} is corrupt ({exc}).", path=what) from exc
    for entry in entries:
        safe_relpath(entry.relpath, f"an entry of the tree manifest {what}")
    # Every hash is 64 characters and all of them together are hex: then each one is.
    hashes = [e.hash for e in entries]
    if any(len(h) != 64 for h in hashes) or not _HEX.fullmatch("".join(hashes)):
        bad = next(h for h in hashes if not is_hash(h))
        raise CorruptFile(f"The tree manifest {what} holds an invalid hash {bad!r}.", path=what)
    clash = first_overlap(e.relpath for e in entries)
    if clash is not None:
        folder, path = clash
        why = "twice" if folder == path else f"both as a file and as the folder of {path!r}"
        raise CorruptFile(
            f"The tree manifest {what} is corrupt: it names {folder!r} {why}.", path=what
        )
    return entries


class StatCache(Protocol):
    """What a hasher needs from the state database."""

    def lookup(self, rel: str, st: os.stat_result) -> str | None: ...

    def record(self, rel: str, st: os.stat_result, digest: str, settled: bool = True) -> None: ...


@dataclass(frozen=True, slots=True)
class PathHash:
    """The hash of a workspace path: a file blob or a tree manifest blob."""

    hash: str
    size: int
    kind: str


class Hasher:
    """Hashes project paths, asking the stat cache before reading any file. A file it reads
    is recorded settled only if it changed before a racy marker made in `marker_dir` before
    the read (`pivot._racy`; the 2 s rule without a folder or where the marker does not
    apply)."""

    def __init__(self, root: pathlib.Path, cache: StatCache, marker_dir: str | None = None) -> None:
        self.root = root
        self.cache = cache
        self.marker_dir = marker_dir
        self._made: tuple[int, int] | None = None  # the last racy marker made for reading
        self._marked = False  # whether one was tried

    def file_hash(self, rel: str, st: os.stat_result | None = None) -> str:
        st = st or os.stat(os.path.join(self.root, rel))
        cached = self.cache.lookup(rel, st)
        if cached is not None and is_hash(cached):  # the state db is read, so untrusted
            return cached
        path = os.path.join(self.root, rel)
        made = self.read_marker(st)
        wall_ns = time.time_ns()
        digest = hash_file(path)
        after = os.stat(path)
        if _unchanged(st, after):
            self.cache.record(rel, st, digest, _racy.settled(made, after, wall_ns))
        return digest

    def read_marker(self, st: os.stat_result) -> tuple[int, int] | None:
        """A racy marker made before the read of the file of `st`: the last one, or a new
        one when that file changed at or after the last one's time (made since, it may
        settle it); None when none can be made."""
        if self.marker_dir is None:
            return None
        made = self._made
        if not self._marked or (made is not None and _racy.before(made, st) is False):
            made = self._made = _racy.made_after_writes(self.marker_dir, 0)
            self._marked = True
        return made

    def hash_path(self, rel: str) -> PathHash | None:
        """Hash a file or directory; None when it does not exist."""
        try:
            st = os.stat(os.path.join(self.root, rel))
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return self.tree_hash(rel)
        return PathHash(self.file_hash(rel, st), st.st_size, FILE)

    def tree_hash(self, rel: str) -> PathHash:
        """The hash of the tree manifest of the directory `rel`, and its total size."""
        return self.manifest_hash(rel, self.tree_files(rel))

    def manifest_hash(self, rel: str, files: list[tuple[str, os.stat_result]]) -> PathHash:
        """The hash of the tree manifest of the directory `rel` whose `tree_files` are
        `files`, each file hashed through the stat cache."""
        entries = self.tree_entries(rel, files)
        manifest = encode_tree(entries)
        return PathHash(hash_bytes(manifest), sum(e.size for e in entries), DIR)

    def tree_entries(
        self, rel: str, files: list[tuple[str, os.stat_result]] | None = None
    ) -> list[TreeEntry]:
        """The manifest entries of the directory `rel` (of `files`, its `tree_files`, if
        already listed), each file's hash through the stat cache."""
        return [
            TreeEntry(inner, self.file_hash(f"{rel}/{inner}", st), st.st_size, file_mode(st))
            for inner, st in (self.tree_files(rel) if files is None else files)
        ]

    def tree_files(self, rel: str) -> list[tuple[str, os.stat_result]]:
        """Every file under the directory `rel` with its stat (links to files count as
        their target; links to folders are not followed), one stat call per file."""
        files = []
        folders = [""]  # inner paths ("" is `rel` itself), POSIX
        while folders:
            inner_dir = folders.pop()
            prefix = f"{inner_dir}/" if inner_dir else ""
            with os.scandir(os.path.join(self.root, rel, inner_dir)) as listing:
                found = list(listing)
            for entry in found:
                inner = prefix + entry.name
                if entry.is_dir():
                    if not entry.is_symlink():
                        folders.append(inner)
                    continue
                if entry.is_symlink():
                    link_target(entry.path, f"The directory {rel}")
                files.append((inner, entry.stat()))
        return files


def link_target(link: str, what: str) -> str:
    """The real path of the file the symbolic link `link` (in `what`) points to; a
    DefinitionError naming both if it points to nothing."""
    try:
        return os.path.realpath(link, strict=True)
    except OSError as exc:
        raise DefinitionError(
            f"{what} holds the symbolic link {link} -> {os.readlink(link)}, which points to "
            f"nothing ({exc.strerror}). Remove the link, or make it point to a file.",
            path=link,
        ) from None


def file_mode(st: os.stat_result) -> int:
    """The mode bits a checkout restores: executable or not."""
    return checkout_mode(st.st_mode)


def checkout_mode(mode: int) -> int:
    """0o755 if the owner may execute, else 0o644: the only modes a checkout produces."""
    return 0o755 if mode & stat.S_IXUSR else 0o644


def _unchanged(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ino) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ino,
    )
