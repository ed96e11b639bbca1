"""Durable batches of cache insertions (`CacheBatch`): blobs are written to temp files in
the cache's tmp folder, flushed once (one `syncfs` for a large batch, concurrent fsyncs for
a small one), then renamed to their hash names in a single pass, so after a crash a blob
may be missing but is never partial (why batched: docs/benchmarks.md). Also stages local
packs (see `local_packs.py`): a pack is renamed into place before its index."""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import threading
from typing import TYPE_CHECKING

from pivot._fs import (
    make_folder,
    remove_quietly,
    sync_folders,
    write_all,
    write_new,
    write_parts,
)
from pivot.cache.encoding import RAW, PackedBlob
from pivot.cache.hashing import CHUNK, copy_hashing, file_mode, hash_bytes, is_hash, new_hasher
from pivot.cache.local_packs import encode_index
from pivot.errors import CorruptFile, writing
from pivot.project import TEMP_PREFIX

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Executor
    from types import TracebackType

    import blake3

    from pivot.cache.objects import LocalCache

READ_ONLY = 0o444
# A batch with at least this many blobs is flushed with one syncfs; a smaller one fsyncs
# each of its files (concurrently, so the journal commits them together).
SYNCFS_MIN = 64
FSYNC_WORKERS = 16
# Files up to this size are read whole, hashed, and written only if the cache lacks them.
SMALL_FILE = 4 << 20
_counter = itertools.count()


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
        self._prefix = f"{TEMP_PREFIX}{os.getpid()}.{os.urandom(4).hex()}."
        self._staged: dict[str, str] = {}
        # Local packs: (pack temp file, index temp file, its blobs, which name the pack).
        self._packs: list[tuple[str, str, list[PackedBlob]]] = []
        self._packed: set[str] = set()
        self._lock = threading.Lock()
        # The first thread writes into the tmp folder, every other one into a subfolder
        # of its own: creating files in one folder is serialized by the kernel.
        self._folders: dict[int, str] = {}

    def __len__(self) -> int:
        """How many blobs are staged (a local pack counts as one)."""
        with self._lock:
            return len(self._staged) + len(self._packs)

    def __enter__(self) -> CacheBatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None or issubclass(kind, Exception):
            self.commit()
        else:
            self.discard()

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
            and not os.path.isfile(self.cache.object_path(digest))
            and digest not in self.cache.packs.blobs()
        )

    def put_packed(self, blobs: Sequence[tuple[PackedBlob, bytes | memoryview]]) -> int:
        """Stage blobs as one local pack: each is where it lay in another pack (a remote's)
        and its stored bytes from there (see `encoding.encode_blob`). Returns how many
        blobs the pack holds. Each blob's content was verified against its hash by the
        caller, so the hashes are well formed: not checked again (a regular expression
        per blob, about 1 us each)."""
        # What the cache holds is looked up before taking the lock, what this batch staged
        # under it; the pack is named now, so its rows need no renaming.
        absent = set(self.cache.absent(blob.hash for blob, _ in blobs))
        name = os.urandom(16).hex()
        rows = []
        parts = []
        offset = 0
        with self._lock:
            for blob, stored in blobs:
                digest = blob.hash
                if digest not in absent or digest in self._packed or digest in self._staged:
                    continue
                self._packed.add(digest)
                rows.append(PackedBlob(name, offset, len(stored), blob.size, blob.codec, digest))
                parts.append(stored)
                offset += len(stored)
        return self._write_pack(rows, parts)

    def put_new_packed(self, blobs: Sequence[tuple[str, bytes]]) -> int:
        """`put_packed` of blobs read here: (BLAKE3 hex, content) pairs, stored as they are
        (the caller hashed them). Returns how many blobs the pack holds."""
        writer = PackWriter(self)
        try:
            writer.add(blobs)
        except BaseException:
            writer.abandon()
            raise
        return writer.close()

    def _write_pack(self, rows: list[PackedBlob], parts: list[bytes | memoryview]) -> int:
        """Write the pack `rows` describe (their content: `parts`) and its index as temp
        files, staged to be renamed into place on commit."""
        if not rows:
            return 0
        pack_tmp, index_tmp = self._temp(), self._temp()
        try:
            with writing(pack_tmp):
                write_new(pack_tmp, parts, READ_ONLY)
                write_new(index_tmp, encode_index(rows), READ_ONLY)
        except BaseException:
            remove_quietly(pack_tmp)
            with self._lock:
                self._packed.difference_update(row.hash for row in rows)
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
                write_new(tmp, data, READ_ONLY)
            self._stage(digest, tmp)
        return digest

    def adopt(self, tmp: pathlib.Path | str, digest: str) -> None:
        """Stage a complete, verified temp file (from `temp_path`) as blob `digest`."""
        if not is_hash(digest):
            raise CorruptFile(f"Refusing to store a blob under the invalid hash {digest!r}.")
        if not self.wants(digest):
            remove_quietly(str(tmp))
            return
        os.chmod(tmp, READ_ONLY)
        self._stage(digest, str(tmp))

    def hand_over(self) -> list[tuple[str, str]]:
        """Give up the staged blobs without publishing them: their (hash, temp file) pairs
        in staging order, for a batch of another process to `adopt` and commit with other
        work (the scheduler's group commit). Their temp files stay where they are (staged
        from one thread: in the tmp folder itself, which outlives the batch)."""
        with self._lock:
            if self._packs:
                raise ValueError("local packs are not handed over")
            staged, self._staged = self._staged, {}
            self._folders = {}
        return list(staged.items())

    def add_file(self, src: pathlib.Path | str) -> tuple[str, int]:
        """Stage a copy of `src`, hashing what is copied; returns (hash, size)."""
        digest, size, _ = self._add_file(src)
        return digest, size

    def _add_file(self, src: pathlib.Path | str) -> tuple[str, int, int]:
        """(hash, size, checkout mode) of `src`, staged unless the cache has it."""
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return self.add_open(fd, os.fstat(fd))
        finally:
            os.close(fd)

    def add_open(self, fd: int, st: os.stat_result) -> tuple[str, int, int]:
        """`_add_file` of the file open at `fd` (at its start), whose stat is `st`."""
        mode = file_mode(st)
        if st.st_size <= SMALL_FILE:
            data = read_small(fd, st.st_size)
            if len(data) <= SMALL_FILE:
                return self.put_bytes(data), len(data), mode
            hasher = new_hasher(data)
            first: bytes | None = data
        else:
            hasher = new_hasher()
            first = None
        return (*self._stream(fd, hasher, first), mode)

    def _stream(self, fd: int, hasher: blake3.blake3, first: bytes | None) -> tuple[str, int]:
        """Copy the rest of `fd` to a temp file while hashing it (bounded memory)."""
        tmp = self._temp()
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, READ_ONLY)
        size = 0
        try:
            try:
                with writing(tmp):
                    if first:
                        write_all(out, first)
                        size = len(first)
                    copied, digest = copy_hashing(fd, out, hasher=hasher)
                    size += copied
            finally:
                os.close(out)
            if self.wants(digest):
                self._stage(digest, tmp)
            else:
                remove_quietly(tmp)
        except BaseException:
            remove_quietly(tmp)
            raise
        return digest, size

    def _stage(self, digest: str, tmp: str) -> None:
        with self._lock:
            duplicate = digest in self._staged
            if not duplicate:
                self._staged[digest] = tmp
        if duplicate:
            remove_quietly(tmp)

    def commit(self, sync_also: Sequence[str] = (), pool: Executor | None = None) -> int:
        """Make every staged blob durable, then visible in the cache (the renames durable
        too once this returns); returns how many.

        `sync_also` are other files (outside the cache) made durable in the same flush,
        e.g. the temp files of the records that will name these blobs; `pool`, threads
        that fsync concurrently (else some are started for this commit)."""
        with self._lock:
            staged, self._staged = self._staged, {}
            staged_packs, self._packs, self._packed = self._packs, [], set()
        if not staged and not staged_packs:
            if sync_also:
                _fsync_files(list(sync_also), pool)
            self._drop_folders()
            return 0
        done = 0
        try:
            temps = [*_temp_files(staged, staged_packs), *sync_also]
            large = len(temps) >= SYNCFS_MIN
            if large:  # `sync_also` may lie on another filesystem (a linked cache)
                for folder in _filesystems([self.folder, *map(os.path.dirname, sync_also)]):
                    _syncfs(folder)
            else:
                _fsync_files(temps, pool)
            renamed_into: list[pathlib.Path] = []  # folders whose entries changed
            store = self.cache.packs
            while staged_packs:
                pack_tmp, index_tmp, rows = staged_packs[0]
                if not renamed_into:
                    renamed_into += [store.root, *make_folder(store.root)]
                name = rows[0].pack
                index_stat = os.stat(index_tmp)  # a rename keeps inode, mtime and size
                os.replace(pack_tmp, store.pack_path(name))
                os.replace(index_tmp, store.index_path(name))  # the pack is now visible
                store.added(name, rows, index_stat)
                if self.cache.trusting:
                    self.cache.trusted_packs.add(name)
                staged_packs.pop(0)
                done += len(rows)
            objects = str(self.cache.objects)
            made: set[str] = set()
            for digest, tmp in list(staged.items()):
                parent = os.path.join(objects, digest[:2])
                if parent not in made:
                    shard = pathlib.Path(parent)
                    renamed_into += [shard, *make_folder(shard)]
                    made.add(parent)
                os.replace(tmp, os.path.join(parent, digest[2:]))
                del staged[digest]
                done += 1
            # The renames made durable too (one syncfs, or each folder once), before the
            # caller publishes a record naming these blobs.
            if large:
                _syncfs(self.folder)
            else:
                sync_folders(renamed_into, pool)
        except BaseException:
            for tmp in _temp_files(staged, staged_packs):
                remove_quietly(tmp)
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
            remove_quietly(tmp)
        self._drop_folders()

    def _drop_folders(self) -> None:
        """Remove the per-thread subfolders (left alone while a file is still in one)."""
        with self._lock:
            folders, self._folders = self._folders, {}
        for folder in folders.values():
            if folder != str(self.folder):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)


def _temp_files(staged: dict[str, str], packs: list[tuple[str, str, list]]) -> list[str]:
    """Every temp file of a batch's staged blobs and packs."""
    return [*staged.values(), *(path for pack, index, _ in packs for path in (pack, index))]


def read_small(fd: int, size: int, limit: int | None = SMALL_FILE) -> bytes:
    """Read `fd` to its end, or to just past `limit` (a file may grow after its stat)."""
    chunks = []
    total = 0
    want = size + 1
    while data := os.read(fd, want):
        chunks.append(data)
        total += len(data)
        if limit is not None and total > limit:
            break
        # A short read is the end unless the file grew: confirm with a 1-byte read, not a
        # CHUNK one (os.read allocates its whole size: 4 MB per small file was most of the
        # system time of a 100,000-file push).
        want = CHUNK if len(data) == want else 1
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _filesystems(folders: Sequence[str | pathlib.Path]) -> list[str | pathlib.Path]:
    """One of `folders` per filesystem they lie on (by device), in their order: a
    `syncfs` of each flushes them all."""
    chosen: dict[int, str | pathlib.Path] = {}
    for folder in dict.fromkeys(folders):
        chosen.setdefault(os.stat(folder).st_dev, folder)
    return list(chosen.values())


def _syncfs(folder: str | pathlib.Path) -> None:
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


def _fsync_files(paths: list[str], pool: Executor | None = None) -> None:
    """fsync each file; concurrently, so that a journal commits them together."""
    if len(paths) == 1:
        _fsync_path(paths[0])
        return
    if pool is not None:
        list(pool.map(_fsync_path, paths))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(FSYNC_WORKERS, len(paths))) as pool:
        list(pool.map(_fsync_path, paths))


class PackWriter:
    """Local packs of blobs read here ((BLAKE3 hex, content) pairs, hashed by the caller),
    each blob written to the open pack's temp file as it is added, so none is held in
    memory; a pack is staged in the batch with its index once it holds `limit` bytes, the
    last one by `close`. Thread-safe. On an error, `abandon` removes the open pack."""

    def __init__(self, batch: CacheBatch, limit: int | None = None) -> None:
        self.batch = batch
        self.limit = limit
        self._lock = threading.Lock()
        self._fd = -1
        self._path = ""
        self._name = ""
        self._rows: list[PackedBlob] = []
        self._offset = 0
        # Which of the cache's shard folders exist (`LocalCache.absent`), asked once each.
        self._shards: dict[str, bool] = {}

    def add(self, blobs: Sequence[tuple[str, bytes]]) -> None:
        """Append the blobs neither the cache nor the batch holds yet."""
        batch = self.batch
        absent = set(batch.cache.absent((digest for digest, _ in blobs), self._shards))
        with self._lock:
            new = []
            with batch._lock:
                packed, staged = batch._packed, batch._staged
                for digest, data in blobs:
                    if digest not in absent or digest in packed or digest in staged:
                        continue
                    packed.add(digest)
                    new.append((digest, data))
            if not new:
                return
            rest = new  # not yet in a pack's rows (an error unstages them here)
            try:
                while rest:
                    if self._fd < 0:
                        self._open()
                    offset, count = self._offset, 0
                    for digest, data in rest:
                        size = len(data)
                        self._rows.append(PackedBlob(self._name, offset, size, size, RAW, digest))
                        offset += size
                        count += 1
                        if self.limit is not None and offset >= self.limit:
                            break
                    group, rest = rest[:count], rest[count:]
                    with writing(self._path):
                        write_parts(self._fd, [data for _, data in group])
                    self._offset = offset
                    if self.limit is not None and offset >= self.limit:
                        self._stage()
            except BaseException:
                with batch._lock:
                    packed.difference_update(digest for digest, _ in rest)
                raise

    def _open(self) -> None:
        """Start a pack: a new temp file and name."""
        self._name = os.urandom(16).hex()
        self._path = self.batch._temp()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        with writing(self._path):
            self._fd = os.open(self._path, flags, READ_ONLY)

    def close(self) -> int:
        """Stage the open pack; returns how many blobs it holds."""
        with self._lock:
            return self._stage() if self._fd >= 0 else 0

    def abandon(self) -> None:
        """Remove the open pack's temp file; its blobs are no longer staged."""
        with self._lock:
            if self._fd < 0:
                return
            os.close(self._fd)
            self._fd = -1
            remove_quietly(self._path)
            with self.batch._lock:
                self.batch._packed.difference_update(row.hash for row in self._rows)
            self._rows, self._offset = [], 0

    def _stage(self) -> int:
        """Close the open pack, write its index, and stage both (the lock held)."""
        rows, path = self._rows, self._path
        os.close(self._fd)
        self._fd = -1
        self._rows, self._offset = [], 0
        index_tmp = self.batch._temp()
        try:
            with writing(index_tmp):
                write_new(index_tmp, encode_index(rows), READ_ONLY)
        except BaseException:
            remove_quietly(path)
            with self.batch._lock:
                self.batch._packed.difference_update(row.hash for row in rows)
            raise
        with self.batch._lock:
            self.batch._packs.append((path, index_tmp, rows))
        return len(rows)
