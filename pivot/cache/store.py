"""The local content-addressed store under `.pivot/cache/objects`, and checkout from it.

Blobs are loose files (`objects/ab/cdef…`), or, when they were fetched from a remote,
entries of local packs (`packs/`, see `local_packs.py`); every query and checkout reads
both, loose first.

Insertion: a blob is written to a temp file in the cache's tmp folder, made durable, and
only then renamed to its hash name, so after a crash a blob may be missing but is never
partial. `LocalCache.batch()` does this for many blobs at once: every blob is written,
the batch is flushed once (one `syncfs` for a large batch, concurrent fsyncs for a small
one), then everything is renamed in a single pass (why: docs/benchmarks.md).

Checkout of a tree builds the whole tree in a hidden sibling folder, files placed in
parallel, then swaps it into place, so `dest` is either the old output or the complete
new one, never a mix. Files of the old output that already match are linked into the
new tree instead of copied. Files are created in several folders at once, before
anything is deleted, and inodes are kept (linked) rather than freed and reallocated:
creating a file is what checkout pays for (docs/benchmarks.md says where that time goes).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import itertools
import os
import pathlib
import re
import shutil
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import blake3

from pivot.cache.hashing import (
    CHUNK,
    DIR,
    FILE,
    TreeEntry,
    copy_hashing,
    decode_tree,
    encode_tree,
    file_mode,
    hash_bytes,
    hash_file,
    is_hash,
    link_target,
    new_hasher,
)
from pivot.cache.local_packs import encode_index, pack_store
from pivot.errors import CacheCorrupt, CorruptFile, DamagedBlob, PivotError, UnsafePath, writing
from pivot.project import TEMP_PREFIX, safe_relpath

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType

READ_ONLY = 0o444
# Threads placing the files of one tree checkout or storing those of a directory output.
# On a 2-core VM (ext4), 10,000 files of 4 KB in 20 folders: 1 thread 2.4 s, 2 threads
# 1.6 s, 4 threads 2.0 s, 8 threads 1.9 s (medians); so one per core, from 2 to 8.
WORKERS = max(2, min(8, os.cpu_count() or 2))
# Fewer files than this are handled on the calling thread (a pool costs ~1 ms to start).
PARALLEL_MIN = 64
# Items handed to a worker at a time (amortizes the pool's per-task overhead).
SLICE = 64
# A batch with at least this many blobs is flushed with one syncfs; a smaller one fsyncs
# each of its files (concurrently, so the journal commits them together).
SYNCFS_MIN = 64
FSYNC_WORKERS = 16
# Files up to this size are read whole, hashed, and written only if the cache lacks them.
SMALL_FILE = 4 << 20
_RENAME_EXCHANGE = 2
_FICLONE = 0x40049409  # ioctl: share `source`'s extents (reflink)
_AT_FDCWD = -100
_counter = itertools.count()
# The hidden siblings a checkout builds `.<name>.pivot-tmp-<id>` in (and moves the old
# output aside to, `-old-`): left behind only by a killed process.
_LEFTOVER = re.compile(r"\.(.+)\.pivot-(?:tmp|old)-[0-9a-f]{12}")
T = TypeVar("T")
R = TypeVar("R")


class LinkMode(enum.StrEnum):
    """How a checkout places a cached file into the workspace."""

    COPY = "copy"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """What the cache holds for one output path."""

    hash: str
    size: int
    kind: str
    nfiles: int = 1


class LocalCache:
    """Blobs addressed by BLAKE3, sharded by the first two hex digits, read-only."""

    def __init__(self, cache_dir: pathlib.Path, tmp_dir: pathlib.Path) -> None:
        self.objects = cache_dir / "objects"
        self.packs = pack_store(cache_dir / "packs")
        self.quarantine_dir = cache_dir / "quarantine"
        self.tmp_dir = tmp_dir
        # folder -> output name -> its leftover siblings, listed once per folder
        self._leftovers: dict[str, dict[str, list[str]]] = {}
        self._leftovers_lock = threading.Lock()

    def path(self, digest: str) -> pathlib.Path:
        if not is_hash(digest):
            raise CorruptFile(f"Refusing to address the cache with an invalid hash {digest!r}.")
        return self.objects / digest[:2] / digest[2:]

    def _object(self, digest: str) -> str:
        """`path(digest)` as a string, for hashes already validated (tree entries)."""
        return os.path.join(self.objects, digest[:2], digest[2:])

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file() or digest in self.packs.blobs()

    def absent(self, digests: Iterable[str]) -> list[str]:
        """Those of `digests` (valid hashes) that the cache holds neither loose nor packed."""
        packed = self.packs.blobs()
        exists = os.path.exists
        return [d for d in digests if d not in packed and not exists(self._object(d))]

    def sizes(self, digests: Iterable[str]) -> dict[str, int]:
        """The size of each of `digests` (valid hashes) that the cache holds, loose or
        packed; one stat per loose blob."""
        packed = self.packs.blobs()
        objects = os.fspath(self.objects)
        stat = os.stat
        found: dict[str, int] = {}
        for digest in digests:
            where = packed.get(digest)
            if where is not None:
                found[digest] = where.size
                continue
            with contextlib.suppress(FileNotFoundError):
                found[digest] = stat(f"{objects}/{digest[:2]}/{digest[2:]}").st_size
        return found

    def read_bytes(self, digest: str) -> bytes:
        """The content of a blob, verified against its hash (DamagedBlob if it is not)."""
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if digest not in self.packs.blobs():
                raise
            return self.packs.read(digest)
        try:
            data = _read_small(fd, os.fstat(fd).st_size, limit=None)
        finally:
            os.close(fd)
        if hash_bytes(data) != digest:
            raise self.damaged(digest)
        return data

    def damaged(self, digest: str, output: pathlib.Path | None = None) -> DamagedBlob:
        """Set aside the loose object `digest`, found not to match its hash: it is moved to
        the quarantine folder, so the cache no longer holds it. Returns the error to raise."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        moved = self.quarantine_dir / digest
        with contextlib.suppress(FileNotFoundError):
            os.replace(self._object(digest), moved)
        return DamagedBlob(_damage_message(digest, output, f"it was moved to {moved}"), digest)

    def describe(self, digest: str) -> str:
        """Where the cache keeps `digest`, for messages."""
        packed = None if self.path(digest).is_file() else self.packs.blobs().get(digest)
        if packed is not None:
            return f"{digest} in the local pack {self.packs.pack_path(packed.pack)}"
        return str(self.path(digest))

    # ------------------------------------------------------------------ insertion

    def batch(self) -> CacheBatch:
        """A batch of insertions published together (use as a context manager)."""
        return CacheBatch(self)

    def add_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store `data`; the hash is computed here unless already known."""
        digest = digest or hash_bytes(data)
        if self.has(digest):
            return digest
        with self.batch() as batch:
            batch.put_bytes(data, digest)
        return digest

    def add_file(self, src: pathlib.Path) -> tuple[str, int]:
        """Copy `src` into the cache, hashing what is copied; returns (hash, size)."""
        with self.batch() as batch:
            return batch.add_file(src)

    def add_output(
        self, path: pathlib.Path, root: pathlib.Path
    ) -> tuple[StoredOutput, list[tuple[str, str]]]:
        """Store a file or directory output of the project at `root`; returns it and
        (relative file, hash) pairs. A symbolic link in a directory output is stored as the
        file it points to, which must be inside the project (else its content would be
        pushed): a dangling one, or one pointing outside, is an error."""
        if not path.is_dir():
            digest, size = self.add_file(path)
            return StoredOutput(digest, size, FILE), [("", digest)]
        found = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            found.extend(os.path.join(dirpath, name) for name in filenames)
        base = len(str(path)) + 1
        inside = os.path.realpath(root)
        for full in found:  # refused before anything is stored, as a checkout would refuse it
            safe_relpath(full[base:].replace(os.sep, "/"), f"a file of the output {path}")
            if os.path.islink(full):
                target = link_target(full, f"The output {path}")
                if os.path.commonpath([inside, target]) != inside:
                    raise UnsafePath(
                        f"The output {path} holds the symbolic link {full} -> "
                        f"{os.readlink(full)}, which points outside the project (to {target}): "
                        f"Pivot would store and push that file's content. Copy the file into "
                        f"the output instead, or remove the link.",
                        path=full,
                    )
        with self.batch() as batch:
            stored = _in_parallel(batch._add_file, found)
            entries = [
                TreeEntry(full[base:].replace(os.sep, "/"), digest, size, mode)
                for full, (digest, size, mode) in zip(found, stored, strict=True)
            ]
            # Staged last, so it is renamed into place after every entry it names.
            digest = batch.put_bytes(encode_tree(entries))
        total = sum(e.size for e in entries)
        return StoredOutput(digest, total, DIR, len(entries)), [
            (e.relpath, e.hash) for e in entries
        ]

    # ------------------------------------------------------------------ queries

    def tree(self, digest: str) -> list[TreeEntry]:
        return decode_tree(self.read_bytes(digest), f"{digest[:12]} in the local cache")

    def missing(self, digest: str, kind: str) -> list[str]:
        """Blobs of an output that are not in the local cache (a missing tree counts alone;
        a damaged tree manifest is set aside and counts as missing)."""
        if not self.has(digest):
            return [digest]
        if kind == DIR:
            try:
                entries = self.tree(digest)
            except DamagedBlob:
                return [digest]
            return self.absent(e.hash for e in entries)
        return []

    # ------------------------------------------------------------------ checkout

    def checkout(
        self,
        digest: str,
        kind: str,
        dest: pathlib.Path,
        mode: LinkMode = LinkMode.COPY,
        refetch: Callable[[str, str], object] | None = None,
    ) -> list[tuple[str, str]]:
        """Place an output at `dest` from the cache; returns (relative file, hash) pairs.

        `dest` is replaced atomically: it holds the old content until the new content is
        complete; an interrupted or failed checkout leaves it as it was and removes its
        temp files. Every blob placed is verified against its hash (copies while they are
        copied, links before linking): a damaged one is set aside (`damaged`), then
        `refetch(digest, kind)` may bring the output's missing blobs again and the checkout
        is retried; without it, or if the same blob is damaged twice, DamagedBlob is raised.
        The folder of `dest` must exist (`Project.write_path` makes it without following
        links); nothing here follows a link in it.
        """
        mode = LinkMode(mode)
        self.remove_leftovers(dest)
        seen: set[str] = set()
        while True:
            try:
                return self._checkout(digest, kind, dest, mode)
            except DamagedBlob as exc:
                if refetch is None or exc.digest in seen:
                    raise
                seen.add(exc.digest)
                damage = exc
            try:
                refetch(digest, kind)
            except PivotError as failed:
                raise DamagedBlob(
                    f"{damage} Fetching it again failed: {failed}", damage.digest
                ) from failed

    def remove_leftovers(self, dest: pathlib.Path) -> None:
        """Remove the hidden temp siblings of `dest` that a killed checkout left (callers
        hold the project's command lock, so none is in use). Each folder is listed once:
        the leftovers are those of earlier commands."""
        folder = str(dest.parent)
        with self._leftovers_lock:
            found = self._leftovers.get(folder)
            if found is None:
                found = {}
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    for name in os.listdir(folder):
                        if match := _LEFTOVER.fullmatch(name):
                            found.setdefault(match.group(1), []).append(name)
                self._leftovers[folder] = found
            names = found.pop(dest.name, [])
        for name in names:
            _remove_quietly(os.path.join(folder, name))

    def _checkout(
        self, digest: str, kind: str, dest: pathlib.Path, mode: LinkMode
    ) -> list[tuple[str, str]]:
        try:
            with writing(dest):
                if kind == DIR:
                    entries = self.tree(digest)
                    self._checkout_tree(digest, entries, dest, mode)
                    return [(e.relpath, e.hash) for e in entries]
                self._checkout_file(digest, dest, mode)
                return [("", digest)]
        except _Mismatch as exc:
            raise self.damaged(exc.digest, dest) from None
        except DamagedBlob as exc:
            raise DamagedBlob(f"{exc} Nothing was placed at {dest}.", exc.digest) from None

    def _checkout_file(self, digest: str, dest: pathlib.Path, mode: LinkMode) -> None:
        tmp = _sibling(dest, "tmp")
        src = self.path(digest)
        try:
            if src.is_file() or digest not in self.packs.blobs():
                _PLACE[mode](str(src), tmp, digest, 0o644)
            else:  # packed blobs are always placed as copies
                _write_new(tmp, self.packs.read(digest), 0o644)
                os.chmod(tmp, 0o644)
            _swap(tmp, dest)
        except BaseException:
            _remove_quietly(tmp)
            raise

    def _checkout_tree(
        self, digest: str, entries: list[TreeEntry], dest: pathlib.Path, mode: LinkMode
    ) -> None:
        tmp = _sibling(dest, "tmp")
        os.mkdir(tmp)
        try:
            by_folder: dict[str, list[TreeEntry]] = {}
            for entry in entries:
                by_folder.setdefault(entry.relpath.rpartition("/")[0], []).append(entry)
            folders: set[str] = set()
            for parent in by_folder:
                while parent and parent not in folders:
                    folders.add(parent)
                    parent = parent.rpartition("/")[0]
            for folder in sorted(folders):  # parents sort before their children
                os.mkdir(os.path.join(tmp, folder))
            place = _PLACE[mode]
            umask = _umask()
            # Files of the previous output that are already right are linked into the new
            # tree rather than copied: no new inode, and none freed when the old tree goes.
            old = str(dest) if mode is not LinkMode.HARDLINK and _is_folder(dest) else None
            objects = str(self.objects)
            symlink = mode is LinkMode.SYMLINK
            packed = self.packs.blobs()
            read_packed = self.packs.read

            def put_entry(entry: TreeEntry) -> None:
                src = os.path.join(objects, entry.hash[:2], entry.hash[2:])
                target = os.path.join(tmp, entry.relpath)
                if old is not None and _reuse(
                    os.path.join(old, entry.relpath), target, entry, src, symlink
                ):
                    return
                where = packed.get(entry.hash)
                if where is None or (mode is not LinkMode.COPY and os.path.exists(src)):
                    place(src, target, entry.hash, entry.mode, entry.size, entry.mode & umask)
                else:  # packed blobs are always placed as copies
                    _write_new(target, read_packed(entry.hash, where), entry.mode)
                    if entry.mode & umask:
                        os.chmod(target, entry.mode)

            def put(entry: TreeEntry) -> None:
                try:
                    put_entry(entry)
                except _WrongSize as exc:
                    raise CacheCorrupt(
                        f"The tree manifest {digest} of {dest} records {entry.size} bytes for "
                        f"{entry.relpath!r}, but the cache object {entry.hash} it names holds "
                        f"{exc.size} bytes and matches its hash: the manifest is wrong, the "
                        f"object is good. Nothing was placed at {dest}.",
                        digest,
                        path=dest,
                        hint="rerun-stage",
                    ) from None

            # One thread per folder, largest first: the kernel serializes the creations in a
            # folder, and threads waiting for it spin. On ext4 shortly after many deletions,
            # when each creation scans past recently freed inodes, four threads filling one
            # 10,000-file folder burned twice the CPU of one for no less time.
            folders_by_size = sorted(by_folder.values(), key=len, reverse=True)
            _run_slices(put, folders_by_size, len(entries))
            _swap(tmp, dest)
        except BaseException:
            _remove_quietly(tmp)
            raise


class CacheBatch:
    """Blobs inserted together: written to temp files, flushed once, then renamed.

    Thread-safe. Use as a context manager: on leaving, every staged blob is committed
    (also when the body raised an `Exception`: what was staged is complete and verified,
    so a retry need not produce it again); on KeyboardInterrupt or SystemExit the staged
    files are discarded instead. `commit()` may also be called at any time.

    The invariant: a blob appears under its hash name only after its complete content is
    durable. A crash may lose staged blobs (their temp files stay in the tmp folder), never
    expose a partial one. Callers of `put_bytes` with a digest, of `adopt` and of
    `put_packed` vouch that the content matches it (the fetch verifies every blob before
    staging it).
    """

    def __init__(self, cache: LocalCache) -> None:
        self.cache = cache
        self.folder = cache.tmp_dir
        self._prefix = f"{TEMP_PREFIX}{os.getpid()}.{uuid.uuid4().hex[:8]}."
        self._staged: dict[str, str] = {}
        # Local packs: (pack temp file, index temp file, its rows as in `encode_index`).
        self._packs: list[tuple[str, str, list[tuple[str, int, int, int, int]]]] = []
        self._packed: set[str] = set()
        self._lock = threading.Lock()
        # The first thread writes into the tmp folder, every other one into a subfolder
        # of its own: creating files in one folder is serialized by the kernel.
        self._folders: dict[int, str] = {}

    def __enter__(self) -> CacheBatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None or issubclass(kind, Exception):
            self.commit()
        else:
            self.discard()

    def __len__(self) -> int:
        return len(self._staged) + len(self._packed)

    def temp_path(self) -> pathlib.Path:
        """A fresh temp file name under the cache's tmp folder (for streamed blobs)."""
        return pathlib.Path(self._temp())

    def _temp(self) -> str:
        ident = threading.get_ident()
        folder = self._folders.get(ident)
        if folder is None:
            with self._lock:
                if not self._folders:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    folder = str(self.folder)
                else:
                    folder = os.path.join(self.folder, f"{self._prefix}d{len(self._folders)}")
                    os.mkdir(folder)
                self._folders[ident] = folder
        return os.path.join(folder, f"{self._prefix}{next(_counter)}")

    def wants(self, digest: str) -> bool:
        """Whether `digest` is neither in the cache nor staged here."""
        return (
            digest not in self._staged
            and digest not in self._packed
            and not os.path.isfile(self.cache._object(digest))
            and digest not in self.cache.packs.blobs()
        )

    def put_packed(self, blobs: Sequence[tuple[str, bytes | memoryview, int, int]]) -> int:
        """Stage blobs as one local pack: (hash, stored bytes, size, codec) each, stored as
        on a remote (see `encoding.encode_blob`). Returns how many blobs the pack holds."""
        rows = []
        parts = []
        offset = 0
        with self._lock:
            for digest, stored, size, codec in blobs:
                if not is_hash(digest):
                    raise CorruptFile(
                        f"Refusing to store a blob under the invalid hash {digest!r}."
                    )
                if digest in self._packed or not self.wants(digest):
                    continue
                self._packed.add(digest)
                rows.append((digest, offset, len(stored), size, codec))
                parts.append(stored)
                offset += len(stored)
        if not rows:
            return 0
        pack_tmp, index_tmp = self._temp(), self._temp()
        try:
            with writing(pack_tmp):
                fd = os.open(
                    pack_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, READ_ONLY
                )
                try:
                    for part in parts:
                        _write_all(fd, part)
                finally:
                    os.close(fd)
                _write_new(index_tmp, encode_index(rows))
        except BaseException:
            _remove_quietly(pack_tmp)
            with self._lock:
                self._packed.difference_update(row[0] for row in rows)
            raise
        with self._lock:
            self._packs.append((pack_tmp, index_tmp, rows))
        return len(rows)

    def put_bytes(self, data: bytes | memoryview, digest: str | None = None) -> str:
        """Stage `data` (verified against `digest` by the caller, or hashed here)."""
        digest = digest or hash_bytes(data)
        if not is_hash(digest):
            raise CorruptFile(f"Refusing to store a blob under the invalid hash {digest!r}.")
        if self.wants(digest):
            tmp = self._temp()
            with writing(tmp):
                _write_new(tmp, data)
            self._stage(digest, tmp)
        return digest

    def adopt(self, tmp: pathlib.Path | str, digest: str) -> None:
        """Stage a complete, verified temp file (from `temp_path`) as blob `digest`."""
        if not is_hash(digest):
            raise CorruptFile(f"Refusing to store a blob under the invalid hash {digest!r}.")
        if not self.wants(digest):
            _remove_quietly(str(tmp))
            return
        os.chmod(tmp, READ_ONLY)
        self._stage(digest, str(tmp))

    def add_file(self, src: pathlib.Path | str) -> tuple[str, int]:
        """Stage a copy of `src`, hashing what is copied; returns (hash, size)."""
        digest, size, _ = self._add_file(src)
        return digest, size

    def _add_file(self, src: pathlib.Path | str) -> tuple[str, int, int]:
        """(hash, size, checkout mode) of `src`, staged unless the cache has it."""
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            mode = file_mode(st)
            if st.st_size <= SMALL_FILE:
                data = _read_small(fd, st.st_size)
                if len(data) <= SMALL_FILE:
                    return self.put_bytes(data), len(data), mode
                hasher = new_hasher(data)
                first: bytes | None = data
            else:
                hasher = new_hasher()
                first = None
            return (*self._stream(fd, hasher, first), mode)
        finally:
            os.close(fd)

    def _stream(self, fd: int, hasher: blake3.blake3, first: bytes | None) -> tuple[str, int]:
        """Copy the rest of `fd` to a temp file while hashing it (bounded memory)."""
        tmp = self._temp()
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, READ_ONLY)
        size = 0
        try:
            try:
                with writing(tmp):
                    if first:
                        _write_all(out, first)
                        size = len(first)
                    copied, digest = copy_hashing(fd, out, hasher=hasher)
                    size += copied
            finally:
                os.close(out)
            if self.wants(digest):
                self._stage(digest, tmp)
            else:
                _remove_quietly(tmp)
        except BaseException:
            _remove_quietly(tmp)
            raise
        return digest, size

    def _stage(self, digest: str, tmp: str) -> None:
        with self._lock:
            duplicate = digest in self._staged
            if not duplicate:
                self._staged[digest] = tmp
        if duplicate:
            _remove_quietly(tmp)

    def commit(self) -> int:
        """Make every staged blob durable, then visible in the cache; returns how many."""
        with self._lock:
            staged, self._staged = self._staged, {}
            staged_packs, self._packs, self._packed = self._packs, [], set()
        if not staged and not staged_packs:
            self._drop_folders()
            return 0
        done = 0
        try:
            temps = _temp_files(staged, staged_packs)
            if len(temps) >= SYNCFS_MIN:
                _syncfs(self.folder)
            else:
                _fsync_files(temps)
            store = self.cache.packs
            while staged_packs:
                pack_tmp, index_tmp, rows = staged_packs[0]
                store.root.mkdir(parents=True, exist_ok=True)
                name = uuid.uuid4().hex
                os.replace(pack_tmp, store.pack_path(name))
                os.replace(index_tmp, store.index_path(name))  # the pack is now visible
                store.added(name, rows)
                staged_packs.pop(0)
                done += len(rows)
            objects = str(self.cache.objects)
            made: set[str] = set()
            for digest, tmp in list(staged.items()):
                parent = os.path.join(objects, digest[:2])
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                os.replace(tmp, os.path.join(parent, digest[2:]))
                del staged[digest]
                done += 1
        except BaseException:
            for tmp in _temp_files(staged, staged_packs):
                _remove_quietly(tmp)
            raise
        finally:
            self._drop_folders()
        return done

    def discard(self) -> None:
        """Drop every staged blob (their temp files are removed)."""
        with self._lock:
            staged, self._staged = self._staged, {}
            staged_packs, self._packs, self._packed = self._packs, [], set()
        for tmp in _temp_files(staged, staged_packs):
            _remove_quietly(tmp)
        self._drop_folders()

    def _drop_folders(self) -> None:
        """Remove the per-thread subfolders (left alone while a file is still in one)."""
        with self._lock:
            folders, self._folders = self._folders, {}
        for folder in folders.values():
            if folder != str(self.folder):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)


# ---------------------------------------------------------------------- file helpers


def _temp_files(staged: dict[str, str], packs: list[tuple[str, str, list]]) -> list[str]:
    """Every temp file of a batch's staged blobs and packs."""
    return [*staged.values(), *(path for pack, index, _ in packs for path in (pack, index))]


def _read_small(fd: int, size: int, limit: int | None = SMALL_FILE) -> bytes:
    """Read `fd` to its end, or to just past `limit` (a file may grow after its stat)."""
    chunks = []
    total = 0
    want = size + 1
    while data := os.read(fd, want):
        chunks.append(data)
        total += len(data)
        if limit is not None and total > limit:
            break
        want = CHUNK
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_new(path: str, data: bytes | memoryview, mode: int = READ_ONLY) -> None:
    """Create `path` (which must not exist) holding `data`; removed again on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        _remove_quietly(path)
        raise


def _syncfs(folder: pathlib.Path) -> None:
    """Flush the filesystem holding `folder` (falls back to a global sync)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_files(paths: list[str]) -> None:
    """fsync each file; concurrently, so that a journal commits them together."""
    if len(paths) == 1:
        _fsync_path(paths[0])
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(FSYNC_WORKERS, len(paths))) as pool:
        list(pool.map(_fsync_path, paths))


class _Mismatch(Exception):
    """A cache object's bytes do not match its hash (turned into DamagedBlob by
    `LocalCache.checkout`, which sets the object aside)."""

    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


class _WrongSize(Exception):
    """A cache object matches its hash but not the size its tree manifest records: the
    manifest is wrong, not the object (the caller names the manifest)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _check(digest: str, size: int, actual: str, copied: int) -> None:
    """Raise _Mismatch if the bytes read do not hash to `digest`, else _WrongSize if they
    are not the `size` expected (unless -1)."""
    if actual != digest:
        raise _Mismatch(digest)
    if size >= 0 and copied != size:
        raise _WrongSize(copied)


def _damage_message(digest: str, output: pathlib.Path | None, done: str) -> str:
    """What a DamagedBlob says: which object, for which output, and where it went."""
    of = f" for {output}" if output is not None else ""
    return (
        f"The local cache object {digest}{of} does not match its hash: it is damaged, and {done}."
    )


def _copy_file(src: str, dest: str, digest: str, mode: int, size: int = -1, chmod: int = 1) -> None:
    """Create `dest` (it must not exist) as a copy of `src` with permission bits `mode`,
    verifying that the bytes placed hash to `digest` (else `dest` is removed)."""
    source = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            if chmod:  # the umask removed some of the bits
                os.fchmod(target, mode)
            copied, actual = _clone_or_copy(source, target, size)
        finally:
            os.close(target)
    finally:
        os.close(source)
    if actual != digest or (size >= 0 and copied != size):
        _remove_quietly(dest)
    _check(digest, size, actual, copied)


def _clone_or_copy(source: int, target: int, size: int) -> tuple[int, str]:
    """Reflink `source` into `target` where the filesystem shares extents (then hash the
    object), else copy it while hashing; returns (bytes, hash of the object's bytes)."""
    import fcntl

    try:
        fcntl.ioctl(target, _FICLONE, source)
    except OSError:
        return copy_hashing(source, target, size)
    return copy_hashing(source, None, size)


def _verify_object(src: str, digest: str, size: int = -1) -> None:
    """Hash the cache object `src` before it is linked into the workspace."""
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        copied, actual = copy_hashing(fd, None, size)
    finally:
        os.close(fd)
    _check(digest, size, actual, copied)


def _link(src: str, dest: str, digest: str, mode: int, size: int = -1, chmod: int = 1) -> None:
    """Hard-link `src` once verified; across filesystems (EXDEV), where no link can exist,
    copy it."""
    _verify_object(src, digest, size)
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_file(src, dest, digest, mode, size, chmod=1)


def _symlink(src: str, dest: str, digest: str, mode: int, size: int = -1, chmod: int = 1) -> None:
    _verify_object(src, digest, size)
    os.symlink(src, dest)


_PLACE: dict[LinkMode, Callable[..., None]] = {
    LinkMode.COPY: _copy_file,
    LinkMode.HARDLINK: _link,
    LinkMode.SYMLINK: _symlink,
}


def _reuse(old: str, target: str, entry: TreeEntry, src: str, symlink: bool) -> bool:
    """Link `old` (a file of the output being replaced) to `target` if it already is what
    the checkout would place there: an unshared copy with the entry's content and mode,
    or a symlink to the entry's cache object."""
    try:
        st = os.lstat(old)
        if symlink:
            if not stat.S_ISLNK(st.st_mode) or os.readlink(old) != src:
                return False
            _verify_object(src, entry.hash, entry.size)
        elif not (
            stat.S_ISREG(st.st_mode)
            and st.st_nlink == 1
            and st.st_size == entry.size
            and stat.S_IMODE(st.st_mode) == entry.mode
            and hash_file(old) == entry.hash
        ):
            return False
        os.link(old, target, follow_symlinks=False)
    except OSError:
        return False
    return True


def _is_folder(path: pathlib.Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _umask() -> int:
    """The process umask, read without changing it (other threads may create files)."""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


# ---------------------------------------------------------------------- tree helpers


def _run_slices(func: Callable[[T], object], slices: Sequence[Sequence[T]], total: int) -> None:
    """Call `func` on every item, a slice per pool task in the order given (on the
    calling thread for small jobs); the first error stops the rest and is raised."""
    if total < PARALLEL_MIN or WORKERS <= 1 or len(slices) < 2:
        for part in slices:
            for item in part:
                func(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def run(part: Sequence[T]) -> None:
        for item in part:
            if stop.is_set():
                return
            func(item)

    pool = ThreadPoolExecutor(min(WORKERS, len(slices)), thread_name_prefix="pivot-cache")
    try:
        for future in [pool.submit(run, part) for part in slices]:
            future.result()
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_parallel(func: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`[func(i) for i in items]` on the cache's thread pool (see `_run_slices`)."""
    results: list[R] = [None] * len(items)  # type: ignore[list-item]

    def one(i: int) -> None:
        results[i] = func(items[i])

    indexes = range(len(items))
    _run_slices(one, [indexes[i : i + SLICE] for i in indexes[::SLICE]], len(items))
    return results


def _sibling(dest: pathlib.Path, kind: str) -> str:
    return os.path.join(dest.parent, f".{dest.name}.pivot-{kind}-{uuid.uuid4().hex[:12]}")


def _swap(tmp: str, dest: pathlib.Path) -> None:
    """Put `tmp` at `dest`, replacing what is there; readers see the old or the new."""
    try:
        os.rename(tmp, dest)
        return
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise
    if _exchange(tmp, dest):
        old = tmp
    else:
        old = _sibling(dest, "old")
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
    try:
        remove_path(pathlib.Path(old))
    except BaseException:
        _remove_quietly(old)
        raise


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    import ctypes

    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(a: str, b: pathlib.Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unsupported."""
    import ctypes

    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove_path(path: pathlib.Path) -> None:
    """Remove a file, link or directory tree (read-only entries included)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        remove_path(pathlib.Path(path))
