"""What a remote is known to hold, per output and per run record: a memo in the state db
that lets a push with nothing to send skip decoding the remote's indexes and the outputs'
tree manifests (a second each at 100,000 files).

An entry says: this output (or run record) has N blobs, and the remote indexes IDS list
all of them. Indexes are immutable and named by their content, so while every one of IDS
is among the remote's cached index ids (which every refresh keeps in step with the remote's
listing), the remote still lists every blob of the output: the same knowledge the full check
draws from the cached indexes, without reading them. The memo is untrusted local state: an
entry that does not decode, or names an index that is not cached any more, counts as
absent, and the push checks in full (and records the entry again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from pivot.cache.hashing import DIR
from pivot.untrusted import count

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pivot.cache.hashing import TreeEntry
    from pivot.cache.state import StateDB
    from pivot.remote.index_cache import RemoteContents

NAMESPACE = "remote-held"
Output = tuple[str, str]  # (hash, kind)
Entry = tuple[int, frozenset[str]]  # (blobs, ids of the indexes listing them)


def encode_entry(blobs: int, ids: Iterable[str]) -> bytes:
    return msgpack.packb([blobs, sorted(bytes.fromhex(i) for i in ids)], use_bin_type=True)


def decode_entry(data: bytes) -> Entry:
    """(blobs, index ids) of one memo entry; ValueError unless it is well formed."""
    try:
        raw = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not msgpack ({exc})") from None
    if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[1], list) or not raw[1]:
        raise ValueError("not [blobs, [index id, ...]]")
    blobs = count(raw[0])
    ids = []
    for ident in raw[1]:
        if not isinstance(ident, bytes) or len(ident) != 32:
            raise ValueError("an index id is not 32 bytes")
        ids.append(ident.hex())
    return blobs, frozenset(ids)


def output_key(digest: str, kind: str) -> str:
    return f"{kind}:{digest}"


def run_key(key: str) -> str:
    return f"run:{key}"


class HeldMemo:
    """The memo of one remote (`tag` names it, as it names the remote's cached indexes)."""

    def __init__(self, state: StateDB, tag: str) -> None:
        self.state = state
        self.namespace = f"{NAMESPACE}:{tag}"

    def held(
        self, outputs: Iterable[Output], run_keys: Iterable[str], live: set[str]
    ) -> int | None:
        """How many blobs the remote holds for `outputs`, if the memo vouches for every
        output and run record through indexes among `live` (the cached index ids); else
        None."""
        keys = [output_key(*o) for o in outputs] + [run_key(k) for k in run_keys]
        entries = dict(self.state.items(self.namespace))
        total = 0
        for key in dict.fromkeys(keys):
            data = entries.get(key)
            if data is None:
                return None
            try:
                blobs, ids = decode_entry(data)
            except ValueError:
                return None
            if not ids <= live:
                return None
            total += blobs
        return total

    def record(
        self,
        contents: RemoteContents,
        outputs: Iterable[Output],
        run_keys: Iterable[str],
        trees: dict[str, list[TreeEntry]],
    ) -> None:
        """Remember the outputs and run records `contents` lists in full (a tree through
        its entries in `trees`, or through its manifest alone when it is not there, as
        the full check counts it); entries naming indexes no longer in `contents` go."""
        found: dict[str, bytes] = {}
        for digest, kind in outputs:
            blobs = [digest]
            if kind == DIR and digest in trees:
                blobs.extend(dict.fromkeys(e.hash for e in trees[digest]))
            ids = contents.indexes_listing(blobs)
            if ids:
                found[output_key(digest, kind)] = encode_entry(len(set(blobs)), ids)
        for key in run_keys:
            ident = contents.run_index.get(key)
            if ident is not None:
                found[run_key(key)] = encode_entry(0, [ident])
        for key, data in self.state.items(self.namespace):
            if key in found:
                continue
            try:
                _, ids = decode_entry(data)
            except ValueError:
                ids = frozenset({""})
            if not ids <= contents.index_ids:
                self.state.delete(self.namespace, key)
        for key, data in found.items():
            self.state.put(self.namespace, key, data)
