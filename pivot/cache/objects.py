"""The local content-addressed store under `.pivot/cache/objects` (`LocalCache`): where a
blob lives, which blobs the cache holds, reading them verified, storing outputs, and setting
damaged objects aside in `quarantine/`.

Blobs are loose files (`objects/ab/cdef…`), or, when they were fetched from a remote,
entries of local packs (`packs/`, see `local_packs.py`); every query reads both, loose
first. Insertion goes through a `CacheBatch` (batch.py); checkout is in checkout.py.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pivot._gcpause import collector_off
from pivot.cache import snapshot
from pivot.cache.batch import CacheBatch, read_small
from pivot.cache.checkout import Leftovers
from pivot.cache.hashing import (
    DIR,
    FILE,
    PathHash,
    TreeEntry,
    decode_tree,
    encode_tree_rows,
    hash_bytes,
    is_hash,
    link_target,
)
from pivot.cache.local_packs import pack_store
from pivot.cache.parallel import in_parallel
from pivot.cache.state import Row, stat_row
from pivot.cache.tree_files import TreeFiles
from pivot.errors import CorruptFile, DamagedBlob, UnsafePath
from pivot.project import safe_relpaths

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from pivot.cache.encoding import PackedBlob
    from pivot.cache.folder_packs import Stored
    from pivot.cache.local_packs import PackReader
    from pivot.cache.snapshot import Snapshot

# A directory output of at least this many files keeps its small ones in local packs
# (`folder_packs.store_files`, as `track` stores a folder): creating a file per blob is what
# storing costs at that size. Smaller outputs stay loose, so that `--link hardlink/symlink`
# checkouts share every file; a packed blob is placed as a copy, as the small blobs a pull
# fetched are.
PACKED_TREE = 1000
# Packed blobs read together with one `pread` (`LocalCache.read_each`) up to this many bytes.
RUN_BYTES = 4 << 20


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
        self.leftovers = Leftovers()
        # Tree manifests decoded so far (verified, immutable): pull, fetch and checkout
        # read each several times, and decoding a 100,000-entry one takes a quarter second.
        self._trees: dict[str, list[TreeEntry]] = {}
        # Local packs committed through this cache while `trusting` (a pull, between its
        # fetch and its checkouts) from bytes their writer had just verified: a checkout
        # decodes their blobs and checks sizes but does not hash them a second time.
        self.trusting = False
        self.trusted_packs: set[str] = set()

    def path(self, digest: str) -> pathlib.Path:
        if not is_hash(digest):
            raise CorruptFile(f"Refusing to address the cache with an invalid hash {digest!r}.")
        return self.objects / digest[:2] / digest[2:]

    def object_path(self, digest: str) -> str:
        """`path(digest)` as a string, for hashes already validated (tree entries)."""
        return os.path.join(self.objects, digest[:2], digest[2:])

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file() or digest in self.packs.blobs()

    def absent(self, digests: Iterable[str], shards: dict[str, bool] | None = None) -> list[str]:
        """Those of `digests` (valid hashes) that the cache holds neither loose nor packed;
        a stat per blob, none for those whose shard folder does not exist (a fresh clone's
        cache: 100,000 stats were a tenth of a pull's main thread). `shards` remembers which
        shard folders exist across the calls of a caller asking in parts."""
        packed = self.packs.blobs()
        exists = os.path.exists
        objects = os.fspath(self.objects)
        if shards is None:
            shards = {}
        found = []
        for digest in digests:
            if digest in packed:
                continue
            shard = digest[:2]
            present = shards.get(shard)
            if present is None:
                present = shards[shard] = os.path.isdir(f"{objects}/{shard}")
            if not present or not exists(f"{objects}/{shard}/{digest[2:]}"):
                found.append(digest)
        return found

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
        path = self.object_path(digest) if is_hash(digest) else self.path(digest)  # refused
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if digest not in self.packs.blobs():
                raise
            return self.packs.read(digest)
        try:
            data = read_small(fd, os.fstat(fd).st_size, limit=None)
        finally:
            os.close(fd)
        if hash_bytes(data) != digest:
            raise self.damaged(digest)
        return data

    def read_each(self, digests: Iterable[str]) -> Iterator[tuple[str, bytes | DamagedBlob]]:
        """(digest, verified content) of each of `digests` (held blobs, valid hashes) in
        the order given, or (digest, DamagedBlob) for one found damaged (set aside as
        `read_bytes` does). Packed blobs that lie back to back in a local pack, in that
        order, are read with one `pread` per run of up to RUN_BYTES."""
        packed = self.packs.blobs()
        with self.packs.reader() as reader:
            run: list[PackedBlob] = []
            run_bytes = 0
            for digest in digests:
                where = packed.get(digest)
                if run and (
                    where is None
                    or where.pack != run[-1].pack
                    or where.offset != run[-1].offset + run[-1].length
                    or run_bytes + where.length > RUN_BYTES
                ):
                    yield from self._read_run(reader, run)
                    run, run_bytes = [], 0
                if where is not None:
                    run.append(where)
                    run_bytes += where.length
                    continue
                try:
                    yield digest, self.read_bytes(digest)
                except DamagedBlob as exc:
                    yield digest, exc
            if run:
                yield from self._read_run(reader, run)

    def _read_run(
        self, reader: PackReader, run: list[PackedBlob]
    ) -> Iterator[tuple[str, bytes | DamagedBlob]]:
        for where, found in zip(run, reader.read_run(run), strict=True):
            if isinstance(found, DamagedBlob):
                # A loose copy of the same blob may still be intact (the packed one is
                # dropped from its index now, so this reads the loose one, or fails).
                with contextlib.suppress(DamagedBlob, FileNotFoundError, KeyError):
                    found = self.read_bytes(where.hash)
            yield where.hash, found

    def damaged(self, digest: str, output: pathlib.Path | None = None) -> DamagedBlob:
        """Set aside the loose object `digest`, found not to match its hash: it is moved to
        the quarantine folder, so the cache no longer holds it. Returns the error to raise."""
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        moved = self.quarantine_dir / digest
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.object_path(digest), moved)
        return DamagedBlob(
            _damage_message(digest, output, f"it was moved to {moved}"), digest, path=output
        )

    # ------------------------------------------------------------------ insertion

    def batch(self) -> CacheBatch:
        """A batch of insertions published together (use as a context manager)."""
        return CacheBatch(self)

    def add_file(self, src: pathlib.Path) -> tuple[str, int]:
        """Copy `src` into the cache, hashing what is copied; returns (hash, size)."""
        with self.batch() as batch:
            return batch.add_file(src)

    def add_output(
        self,
        path: pathlib.Path,
        root: pathlib.Path,
        packed: bool = False,
        rel: str | None = None,
        snapshots: dict[str, Snapshot] | None = None,
        made: tuple[int, int] | None = None,
    ) -> tuple[StoredOutput, list[Row]]:
        """Store a file or directory output of the project at `root`; returns it and the
        stat-cache rows of its files (the stat each had when it was read; a file that
        changed while it was read has none). A symbolic link in a directory output is
        stored as the file it points to, which must be inside the project (else its content
        would be pushed): a dangling one, or one pointing outside, is an error. With
        `packed`, or for a directory of PACKED_TREE files or more, its small files go into
        local packs (`folder_packs.py`). `rel` is the output's path in the project when
        `path` does not name it (a pinned descriptor's `/proc/self/fd/N`). With
        `snapshots`, a directory's snapshot (`snapshot.of_stored`, judged by the racy
        marker `made`, made before this call) is put there under `rel` when it may be
        kept."""
        if rel is None:
            rel = path.relative_to(root).as_posix()
        if not path.is_dir():
            st = os.stat(path)
            digest, size = self.add_file(path)
            return StoredOutput(digest, size, FILE), [stat_row(rel, st, digest)]
        top = str(path)
        with TreeFiles(top, rel) as tree, collector_off():
            return self._add_tree(path, root, packed, rel, tree, snapshots, made)

    def _add_tree(
        self,
        path: pathlib.Path,
        root: pathlib.Path,
        packed: bool,
        rel: str,
        tree: TreeFiles,
        snapshots: dict[str, Snapshot] | None,
        made: tuple[int, int] | None,
    ) -> tuple[StoredOutput, list[Row]]:
        """`add_output` of the folder `path`, its files listed and opened by `tree`."""
        top = tree.top
        inner, links = tree.walk()
        # Refused before anything is stored, as a checkout would refuse them.
        safe_relpaths(inner, f"a file of the output {path}")
        inside = os.path.realpath(root)
        for link in links:
            full = os.path.join(top, link)
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
            if packed or len(inner) >= PACKED_TREE:
                from pivot.cache.folder_packs import store_files

                stored = store_files(batch, inner, tree.open)
            else:
                stored = in_parallel(lambda name: _add_stated(batch, tree.open(name)), inner)
            manifest = [(name, s[0], s[1], s[2]) for name, s in zip(inner, stored, strict=True)]
            # Staged last, so it is renamed into place after every entry it names.
            digest = batch.put_bytes(encode_tree_rows(manifest))
        total = sum(s[1] for s in stored)
        if snapshots is not None:
            stats = [s[3] for s in stored]
            found = snapshot.of_stored(
                made, top, inner, stats, bool(links), PathHash(digest, total, DIR)
            )
            if found is not None:
                snapshots[rel] = found
        rows = [
            (f"{rel}/{name}", st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, s[0])
            for name, s in zip(inner, stored, strict=True)
            if (st := s[3]) is not None
        ]
        return StoredOutput(digest, total, DIR, len(stored)), rows

    # ------------------------------------------------------------------ queries

    def tree(self, digest: str) -> list[TreeEntry]:
        """The entries of the tree manifest `digest` (the same list on every call: callers
        do not change it)."""
        entries = self._trees.get(digest)
        if entries is None:
            entries = decode_tree(self.read_bytes(digest), f"{digest[:12]} in the local cache")
            self._trees[digest] = entries
        return entries

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


def _add_stated(batch: CacheBatch, fd: int) -> Stored:
    """`CacheBatch._add_file` of the open file `fd` (closed here), with the stat under
    which it was read."""
    try:
        st = os.fstat(fd)
        digest, size, mode = batch.add_open(fd, st)
    finally:
        os.close(fd)
    return digest, size, mode, st if size == st.st_size else None


def _damage_message(digest: str, output: pathlib.Path | None, done: str) -> str:
    """What a DamagedBlob says: which object, for which output, and where it went."""
    of = f" for {output}" if output is not None else ""
    return (
        f"The local cache object {digest}{of} does not match its hash: it is damaged, and {done}."
    )
