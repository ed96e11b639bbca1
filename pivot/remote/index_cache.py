"""The local cache of a remote's indexes (in the state db) and their union.

Refreshing lists `index/` once and downloads only the index objects not cached yet, so
knowing what a remote holds costs one listing, never a request per blob or pack.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import blake3
import msgpack

from pivot.errors import RemoteCorrupt
from pivot.remote.packs import Index, decode_index, index_id

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pivot.cache.encoding import PackedBlob
    from pivot.cache.state import StateDB
    from pivot.remote.stores import Remote

NAMESPACE = "remote-index"
IDS_KEY = "@ids"
WRITTEN = "remote-index-written"


@dataclass
class RemoteContents:
    """The union of a remote's indexes: every blob and run record it holds."""

    blobs: dict[str, PackedBlob] = field(default_factory=dict)
    runs: dict[str, bytes] = field(default_factory=dict)
    index_ids: set[str] = field(default_factory=set)
    # The index that lists each pack and run record (the first one read, like `blobs`).
    pack_index: dict[str, str] = field(default_factory=dict)
    run_index: dict[str, str] = field(default_factory=dict)

    def add(self, index: Index, ident: str) -> None:
        """Add the index `ident`."""
        blobs = self.blobs
        for pack in index.packs:
            self.pack_index.setdefault(pack.pack_id, ident)
            for b in pack.blobs:
                if b.hash not in blobs:
                    blobs[b.hash] = b
        for key, record in index.runs:
            self.runs.setdefault(key, record)
            self.run_index.setdefault(key, ident)
        self.index_ids.add(ident)

    def indexes_listing(self, digests: Iterable[str]) -> set[str] | None:
        """The indexes that list `digests`, or None unless every one is listed."""
        ids = set()
        for digest in digests:
            where = self.blobs.get(digest)
            if where is None:
                return None
            ids.add(self.pack_index[where.pack])
        return ids

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs


def _listed_ids(raw: bytes | None) -> list[str]:
    """The index ids of the last listing as stored by `_set_ids`; none (as if never
    listed: the next refresh lists again) for anything else (the state db is untrusted)."""
    if raw is None:
        return []
    try:
        ids = msgpack.unpackb(raw, raw=False)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        return []
    if type(ids) is not list or not all(type(i) is str for i in ids):
        return []
    return ids


class RemoteIndexCache:
    """Index objects of one remote, cached by id in the state db."""

    def __init__(self, state: StateDB, remote: Remote) -> None:
        self.state = state
        self.remote = remote
        self.tag = blake3.blake3(remote.identity.encode()).hexdigest()[:32]
        self.namespace = f"{NAMESPACE}:{self.tag}"
        self.written = f"{WRITTEN}:{self.tag}"  # ids of indexes written since the listing

    def cached_ids(self) -> list[str]:
        """The remote's index ids as last listed, with those written since (sorted)."""
        listed = _listed_ids(self.state.get(self.namespace, IDS_KEY))
        written = [ident for ident, _ in self.state.items(self.written)]
        return sorted({*listed, *written}) if written else listed

    def _set_ids(self, ids: list[str], seen_written: set[str]) -> None:
        """Record `ids` as the remote's indexes, and forget the written ids `seen_written`
        (read before the listing `ids` came from, so it covers each unless the remote
        dropped it), in one transaction: an id another process writes meanwhile stays."""
        self.state.update(
            puts=[(self.namespace, IDS_KEY, msgpack.packb(sorted(set(ids))))],
            deletes=[(self.written, ident) for ident in sorted(seen_written)],
        )

    def _what(self, ident: str) -> str:
        return f"index {ident[:16]} of remote {self.remote.display}"

    def load(self) -> RemoteContents:
        """The union of the cached indexes, without contacting the remote."""
        cached = self._cached()
        return self._union([i for i in self.cached_ids() if i in cached], cached)

    def refresh(self, jobs: int = 8) -> RemoteContents:
        """List the remote's indexes, download the new ones, and return the union.

        Cached copies of indexes no longer on the remote (deleted by hand, or merged by
        a compaction) are dropped from the state db, so they stop counting as held.
        """
        # What is cached is read before the listing, so whatever it holds was on the
        # remote before the listing began (`remember` records an index once written, in
        # one transaction; read next, the written ids hold every cached one written): an
        # index another process writes after this point may be missing from the listing,
        # and is neither dropped nor forgotten.
        cached = self._cached()
        written = {ident for ident, _ in self.state.items(self.written)}
        listed = self.remote.list_indexes()
        on_remote = set(listed)
        gone = [i for i in cached if i not in on_remote]
        if gone:
            self.state.update(deletes=[(self.namespace, i) for i in gone])
            for ident in gone:
                del cached[ident]
        new = [i for i in listed if i not in cached]
        decoded: dict[str, Index] = {}
        if new:
            with ThreadPoolExecutor(max(1, min(jobs, len(new)))) as pool:
                fetched = list(pool.map(self._download, new))
            for ident, (data, index) in zip(new, fetched, strict=True):
                self.state.put(self.namespace, ident, data)
                cached[ident] = data
                decoded[ident] = index
        if written or set(self.cached_ids()) != on_remote:
            self._set_ids(listed, written)
        return self._union(listed, cached, decoded)

    def _cached(self) -> dict[str, bytes]:
        """Every index object held in the state db for this remote, by id."""
        return {k: v for k, v in self.state.items(self.namespace) if k != IDS_KEY}

    def _union(
        self, ids: list[str], cached: dict[str, bytes], decoded: dict[str, Index] | None = None
    ) -> RemoteContents:
        """The union of the indexes `ids`: those in `decoded` as they are, the others
        decoded from `cached`."""
        contents = RemoteContents()
        for ident in ids:
            index = (decoded or {}).get(ident)
            if index is None:
                index = decode_index(cached[ident], self._what(ident))
            contents.add(index, ident)
        return contents

    def _download(self, ident: str) -> tuple[bytes, Index]:
        """An index object's bytes, checked against its name, and decoded."""
        data = self.remote.get_bytes(self.remote.index_key(ident))
        if index_id(data) != ident:
            raise RemoteCorrupt(
                f"The {self._what(ident)} does not match its name (its content hash differs): "
                f"the object is damaged. Remove it from the remote and push again.",
                remote=self.remote.name,
                display=self.remote.display,
                key=self.remote.index_key(ident),
            )
        return data, decode_index(data, self._what(ident))

    def decoded(self, ids: Iterable[str]) -> dict[str, Index]:
        """The cached indexes among `ids`, decoded, by id."""
        cached = self._cached()
        return {i: decode_index(cached[i], self._what(i)) for i in ids if i in cached}

    def remember(self, ident: str, data: bytes) -> None:
        """Record an index this process has just written to the remote: its id goes to a
        namespace of its own (`written`) rather than into the listed ids, whose rewrite
        at each index cost a Dask worker, which writes one per task, time growing with
        the remote's index count."""
        self.state.update(puts=[(self.namespace, ident, data), (self.written, ident, b"")])
