"""Blobs kept packed in the local cache: `.pivot/cache/packs/<name>.pack` and `.idx`.

A fetch stores the small blobs of each range it reads from a remote pack as one local
pack (the stored bytes as fetched, zstd or raw, each blob verified before) instead of a
file per blob: on the filesystems where creating a file is the dominant cost, a pull of
10,000 small files then creates 10,000 files (the workspace copies), not 20,000.
`track` of a folder, and storing a directory output of many files, pack their small files
the same way, raw (`folder_packs.py`).

A pack becomes visible when its index file appears; the index is renamed into place only
after the pack itself, and both are durable first (see `CacheBatch.commit`). The index is
msgpack: `{"v": 1, "blobs": [[hash(32 bytes), offset, length, size, codec], ...]}`.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import threading
from typing import TYPE_CHECKING

from pivot.cache.encoding import PackedBlob, decode_blob
from pivot.cache.hashing import hash_bytes
from pivot.errors import CorruptFile, DamagedBlob
from pivot.untrusted import LIMIT, count

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

INDEX_VERSION = 1
PACK_SUFFIX = ".pack"
INDEX_SUFFIX = ".idx"
_stores: dict[pathlib.Path, PackStore] = {}
_stores_lock = threading.Lock()


def encode_index(rows: Iterable[PackedBlob]) -> bytes:
    """The index of one local pack: (hash, offset, length, size, codec) per blob."""
    import msgpack

    blobs = [[bytes.fromhex(r.hash), r.offset, r.length, r.size, r.codec] for r in rows]
    return msgpack.packb({"v": INDEX_VERSION, "blobs": blobs}, use_bin_type=True)


def _decode_index(path: pathlib.Path, pack: str) -> dict[str, PackedBlob]:
    import msgpack

    from pivot.cache.encoding import CODECS

    try:
        raw = msgpack.unpackb(path.read_bytes(), raw=False)
        if raw.get("v") != INDEX_VERSION:
            raise ValueError(f"unknown version {raw.get('v')!r}")
        found = {}
        for digest, offset, length, size, codec in raw["blobs"]:
            # The plain case checked inline (a call per field was most of a 100,000-blob
            # pull's index reading); anything else gets `count`'s checks and message.
            if not (
                type(offset) is int
                and type(length) is int
                and type(size) is int
                and 0 <= offset < LIMIT
                and 0 <= length < LIMIT
                and 0 <= size < LIMIT
            ):
                for value in (offset, length, size):
                    count(value)
            if not isinstance(digest, bytes) or len(digest) != 32:
                raise ValueError("a hash is not 32 bytes")
            if codec not in CODECS:
                raise ValueError(f"unknown codec {codec!r}")
            hexdigest = digest.hex()
            found[hexdigest] = PackedBlob(pack, offset, length, size, codec, hexdigest)
        return found
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise CorruptFile(
            f"The local pack index {path} is corrupt ({exc}). Delete it and its .pack file, "
            f"then pull again.",
            path=path,
        ) from exc


def pack_store(root: pathlib.Path) -> PackStore:
    """The one PackStore of the folder `root` in this process (caches share what they
    learn: a pack committed through one is seen at once by all)."""
    with _stores_lock:
        store = _stores.get(root)
        if store is None:
            store = _stores[root] = PackStore(root)
        return store


class PackStore:
    """The local packs of one cache: a lazily loaded map hash -> location, and reads.

    The map is re-read when the folder's mtime changes (another process added or removed
    a pack between two commands), decoding only the indexes whose (inode, mtime, size)
    differ from when they were last decoded (index files are only ever replaced whole);
    packs added or removed by this process update it directly, as the folder's mtime may
    not tick between two changes.
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self._stamp: int | None = None
        self._blobs: dict[str, PackedBlob] = {}
        # pack -> (the stat key of its index when it was decoded, that index's rows)
        self._indexes: dict[str, tuple[_IndexKey, dict[str, PackedBlob]]] = {}
        self._lock = threading.Lock()
        self._drop_lock = threading.Lock()

    def blobs(self) -> dict[str, PackedBlob]:
        """hash -> location of every packed blob (re-read when the folder changed)."""
        try:
            stamp = os.stat(self.root).st_mtime_ns
        except FileNotFoundError:
            stamp = 0
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._blobs = self._load() if stamp else {}
                    self._stamp = stamp
        return self._blobs

    def added(self, pack: str, rows: Iterable[PackedBlob], index: os.stat_result) -> None:
        """Learn the blobs of a pack this process has just made visible, whose index file
        had the stat `index` when it was written: the next `blobs()` after the folder's
        mtime ticked does not decode that index again (decoding every index after each
        fetch was 0.2-0.3 s of CPU in a 100,000-file pull)."""
        found = {row.hash: row for row in rows}
        with self._lock:
            self._blobs.update(found)
            self._indexes[pack] = (_index_key(index), found)

    def _load(self) -> dict[str, PackedBlob]:
        """The union of every index in the folder, decoding those not decoded before as
        they are now."""
        known, fresh = self._indexes, {}
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            names = []
        for name in names:
            if not name.endswith(INDEX_SUFFIX) or name.startswith("."):
                continue
            pack = name[: -len(INDEX_SUFFIX)]
            path = self.root / name
            try:
                key = _index_key(os.stat(path))
                held = known.get(pack)
                if held is None or held[0] != key:
                    # stat first: rows read after it are at least as new as its key says
                    held = (key, _decode_index(path, pack))
            except FileNotFoundError:  # removed since the listing
                continue
            fresh[pack] = held
        self._indexes = fresh
        found: dict[str, PackedBlob] = {}
        for _, rows in fresh.values():
            found.update(rows)
        return found

    def pack_path(self, pack: str) -> pathlib.Path:
        return self.root / f"{pack}{PACK_SUFFIX}"

    def index_path(self, pack: str) -> pathlib.Path:
        return self.root / f"{pack}{INDEX_SUFFIX}"

    def read(self, digest: str, where: PackedBlob | None = None) -> bytes:
        """The content of a packed blob, verified against its hash: a damaged one is
        dropped from its pack's index (see `drop`) and DamagedBlob raised."""
        where = where or self.blobs()[digest]
        # Opened per read (a few us): no descriptor outlives it, whatever the pack count.
        fd = self._open(where.pack)
        try:
            return self._read_at(fd, digest, where)
        finally:
            os.close(fd)

    def reader(self, trusted: frozenset[str] = frozenset()) -> PackReader:
        """Reads of many packed blobs (a tree checkout) that open each pack once."""
        return PackReader(self, trusted)

    def _open(self, pack: str) -> int:
        try:
            return os.open(self.pack_path(pack), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CorruptFile(
                f"The local pack {self.pack_path(pack)} is missing though its index "
                f"{self.index_path(pack)} lists it.",
                path=self.index_path(pack),
                hint="delete-pack-index",
            ) from None

    def _read_at(self, fd: int, digest: str, where: PackedBlob, trusted: bool = False) -> bytes:
        """Read the blob `digest` at `where` in the open pack `fd`, verified (only decoded
        and its size checked when `trusted`: see `PackReader`)."""
        return self.verify(os.pread(fd, where.length, where.offset), digest, where, trusted)

    def verify(
        self, stored: bytes | memoryview, digest: str, where: PackedBlob, trusted: bool = False
    ) -> bytes:
        """The blob `digest` from its `stored` bytes read at `where`, checked against its
        hash (or, when `trusted`, its size only): a damaged one is dropped from its pack's
        index (see `drop`) and DamagedBlob raised."""
        try:
            if len(stored) != where.length:
                raise ValueError("the pack is shorter than its index says")
            data = decode_blob(stored, where.codec, where.size)
            if len(data) != where.size or (not trusted and hash_bytes(data) != digest):
                raise ValueError("it does not match its hash")
        except ValueError as exc:
            self.drop(digest, where)
            raise DamagedBlob(
                f"The blob {digest} in the local pack {self.pack_path(where.pack)} is damaged "
                f"({exc}); it was dropped from the pack's index {self.index_path(where.pack)}.",
                digest,
            ) from None
        return data

    def drop(self, digest: str, where: PackedBlob) -> None:
        """Forget a damaged blob: its pack's index is rewritten without it, so the cache no
        longer holds it (its bytes stay in the pack, unused, until `gc` drops the pack)."""
        from pivot._fs import write_bytes

        with self._drop_lock:
            with self._lock:
                if self._blobs.get(digest) == where:
                    del self._blobs[digest]
            index = self.index_path(where.pack)
            if not index.exists():
                return
            rows = _decode_index(index, where.pack)
            if rows.pop(digest, None) is None:
                return
            if not rows:
                self.remove(where.pack)
                return
            write_bytes(index, encode_index(rows.values()), mode=0o444)

    def indexes(self) -> dict[str, set[str]]:
        """pack name -> the hashes its index lists (for garbage collection)."""
        if not self.root.is_dir():
            return {}
        packs = {}
        for index in sorted(self.root.glob(f"*{INDEX_SUFFIX}")):
            pack = index.name[: -len(INDEX_SUFFIX)]
            packs[pack] = set(_decode_index(index, pack))
        return packs

    def orphans(self) -> list[pathlib.Path]:
        """Pack files without an index (left by an interrupted fetch)."""
        if not self.root.is_dir():
            return []
        return [
            p
            for p in sorted(self.root.glob(f"*{PACK_SUFFIX}"))
            if not p.with_suffix(INDEX_SUFFIX).exists()
        ]

    def remove(self, pack: str) -> None:
        """Drop a pack: its index first, so no reader is left with a dangling entry."""
        with self._lock:
            self._blobs = {d: w for d, w in self._blobs.items() if w.pack != pack}
            self._indexes.pop(pack, None)
        for suffix in (INDEX_SUFFIX, PACK_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / f"{pack}{suffix}")


_IndexKey = tuple[int, int, int]


def _index_key(st: os.stat_result) -> _IndexKey:
    """What identifies one version of an index file (a rewrite is a new file: new inode)."""
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class PackReader:
    """`PackStore.read` for many blobs from any threads: each pack is opened on its first
    read and stays open until `close` (use as a context manager).

    Blobs of the packs in `trusted` (those this command wrote from bytes it had just
    verified: see `LocalCache.trusted_packs`) are decoded and their size checked, not
    hashed again."""

    def __init__(self, store: PackStore, trusted: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.trusted = trusted
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fd(self, pack: str) -> int:
        fd = self._fds.get(pack)
        if fd is None:
            with self._lock:
                fd = self._fds.get(pack)
                if fd is None:
                    fd = self._fds[pack] = self.store._open(pack)
        return fd

    def read(self, digest: str, where: PackedBlob) -> bytes:
        return self.store._read_at(self._fd(where.pack), digest, where, where.pack in self.trusted)

    def read_run(self, run: Sequence[PackedBlob]) -> list[bytes | DamagedBlob]:
        """The blobs `run` names, which lie back to back in one pack, read with one
        `pread` and each verified; a damaged one (dropped, see `PackStore.verify`) comes
        as its DamagedBlob."""
        first = run[0]
        start = first.offset
        end = run[-1].offset + run[-1].length
        data = os.pread(self._fd(first.pack), end - start, start)
        view = memoryview(data)
        trusted = first.pack in self.trusted
        found: list[bytes | DamagedBlob] = []
        for where in run:
            stored = view[where.offset - start : where.offset - start + where.length]
            try:
                found.append(self.store.verify(stored, where.hash, where, trusted))
            except DamagedBlob as exc:
                found.append(exc)
        return found

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
