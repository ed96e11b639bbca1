"""Garbage collection of a remote: drop the packs and indexes no live blob or run record
needs, safely while other machines push.

The caller names the live blobs (tree manifests expanded) and run keys. Safety rests on
four rules:

- Nothing younger than the grace period is deleted, and everything an index younger
  than it lists is live: a push uploads its packs before it writes the index naming
  them, and both are recent while it runs.
- A pack with dead and live blobs is repacked: its live blobs (those no kept pack
  holds) are copied, as stored, into a new content-named pack.
- One new index listing every live blob of the old indexes (kept packs and new packs)
  and the live run records is written before any old pack or index is deleted; then old
  indexes go, then dead packs. A gc killed at any point leaves every live blob listed by
  an index whose packs exist; a second gc finishes the work.
- Indexes that appeared while gc ran are read before anything is deleted: the packs they
  name, and the packs holding blobs their run records name, are kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot.cache.encoding import PackedBlob
from pivot.cache.hashing import is_hash
from pivot.cache.runs import decode_record
from pivot.errors import PivotError
from pivot.remote.packs import Index, PackInfo, decode_index, encode_index, index_id
from pivot.remote.stores import INDEX, PACKS

if TYPE_CHECKING:
    from pivot.remote.stores import Remote


@dataclass
class RemoteGcSummary:
    """What a remote gc removed (or would, with `dry_run`) and kept."""

    remote: str
    dry_run: bool
    grace_hours: float
    indexes_removed: int = 0
    packs_removed: int = 0
    blobs_removed: int = 0
    bytes_removed: int = 0
    runs_removed: int = 0
    packs_repacked: int = 0
    blobs_repacked: int = 0
    bytes_repacked: int = 0
    indexes_kept: int = 0
    packs_kept: int = 0
    blobs_kept: int = 0
    recent_kept: int = 0  # objects younger than the grace period
    index_written: str = ""
    raced: bool = False  # a concurrent push needed what was to go: nothing was deleted
    seconds: float = 0.0
    removed_packs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "removed_packs"}


@dataclass
class _Pack:
    """One pack as the old indexes list it."""

    pack_id: str
    entries: dict[str, PackedBlob] = field(default_factory=dict)
    size: int = 0
    modified: float | None = None


def collect_remote(
    remote: Remote,
    indexes: dict[str, Index],
    live_blobs: set[str],
    live_runs: set[str],
    grace_seconds: float,
    dry_run: bool = False,
    now: float | None = None,
) -> RemoteGcSummary:
    """Collect `remote`, whose indexes (by id, as downloaded) are `indexes`."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    summary = RemoteGcSummary(remote.display, dry_run, grace_seconds / 3600)
    index_times = remote.stamped(INDEX)
    pack_times = remote.stamped(PACKS)

    def recent(modified: float | None) -> bool:
        return modified is None or now - modified < grace_seconds

    listed = {i: ix for i, ix in indexes.items() if i in index_times}
    young = {i for i in listed if recent(index_times[i][1])}
    old = [i for i in sorted(listed) if i not in young]
    summary.recent_kept += len(young)

    # What must stay: live blobs, every blob of a young index, the blobs of kept records.
    protected = set(live_blobs)
    young_packs: set[str] = set()
    for ident in young:
        for pack in listed[ident].packs:
            young_packs.add(pack.pack_id)
            protected.update(b.hash for b in pack.blobs)
    runs: dict[str, bytes] = {}
    for ident in old:
        for key, record in listed[ident].runs:
            outs = decode_record(record, f"run record {key[:12]} on {remote.display}")
            hashes = {o["hash"] for o in outs.values()}
            if key in live_runs or hashes <= protected:
                runs.setdefault(key, record)
            else:
                summary.runs_removed += 1
    for record in runs.values():
        protected.update(o["hash"] for o in decode_record(record, "a run record").values())

    packs = _packs_of(listed[i] for i in old)
    for pack in packs.values():
        pack.size, pack.modified = pack_times.get(pack.pack_id, (0, None))
    kept: list[PackInfo] = []
    covered: set[str] = set()
    partial: list[_Pack] = []
    for pack in packs.values():
        live = [e for e in pack.entries.values() if e.hash in protected]
        if pack.pack_id in young_packs or recent(pack.modified):
            kept.append(PackInfo(pack.pack_id, tuple(_sorted(pack.entries.values()))))
            covered.update(pack.entries)
            summary.recent_kept += 1
        elif live and len(live) == len(pack.entries):
            kept.append(PackInfo(pack.pack_id, tuple(_sorted(live))))
            covered.update(pack.entries)
        else:
            partial.append(pack)
    doomed: list[_Pack] = []
    rebuilt: list[tuple[_Pack, list[PackedBlob]]] = []
    for pack in partial:
        wanted = [e for e in _sorted(pack.entries.values()) if e.hash in protected]
        wanted = [e for e in wanted if e.hash not in covered]
        covered.update(e.hash for e in wanted)
        if wanted:
            rebuilt.append((pack, wanted))
        doomed.append(pack)

    new_packs: list[PackInfo] = []
    for pack, wanted in rebuilt:
        summary.packs_repacked += 1
        summary.blobs_repacked += len(wanted)
        summary.bytes_repacked += sum(e.length for e in wanted)
        if not dry_run:
            new_packs.append(_repack(remote, pack.pack_id, wanted))
    summary.packs_kept = len(kept) + len(rebuilt)
    summary.blobs_kept = len(covered)

    # Packs no index lists (an interrupted push's), once older than the grace period.
    listed_packs = {p.pack_id for ix in listed.values() for p in ix.packs}
    orphans = [
        name
        for name, (_, modified) in pack_times.items()
        if is_hash(name) and name not in listed_packs and not recent(modified)
    ]
    summary.recent_kept += sum(
        1
        for name, (_, modified) in pack_times.items()
        if is_hash(name) and name not in listed_packs and recent(modified)
    )

    new_id = ""
    if old and (doomed or orphans or summary.runs_removed or rebuilt):
        data = encode_index([*kept, *new_packs], sorted(runs.items()))
        new_id = index_id(data)
        if not dry_run and new_id not in listed:
            remote.put_bytes(remote.index_key(new_id), data)
        summary.index_written = new_id
    removable_indexes = [i for i in old if i != new_id] if new_id else []

    dropped = [p.pack_id for p in doomed] + orphans
    if not dry_run and dropped and _raced(remote, set(index_times), new_id, dropped, packs):
        # A push that ran meanwhile relies on what would go: delete nothing this time.
        summary.raced = True
        dropped, removable_indexes = [], []
    summary.indexes_removed = len(removable_indexes)
    summary.indexes_kept = (
        len(listed) - len(removable_indexes) + (1 if new_id and new_id not in listed else 0)
    )
    for name in dropped:
        size = pack_times.get(name, (0, None))[0]
        summary.packs_removed += 1
        summary.bytes_removed += size
        summary.blobs_removed += len(packs[name].entries) if name in packs else 0
        summary.removed_packs.append(name)
    summary.blobs_removed -= sum(len(w) for _, w in rebuilt)
    summary.bytes_removed += sum(index_times[i][0] for i in removable_indexes)
    if not dry_run:
        for ident in removable_indexes:
            remote.delete(remote.index_key(ident))
        for name in dropped:
            remote.delete(remote.pack_key(name))
    summary.seconds = time.perf_counter() - started
    return summary


def _packs_of(indexes: Iterable[Index]) -> dict[str, _Pack]:
    packs: dict[str, _Pack] = {}
    for index in indexes:
        for info in index.packs:
            pack = packs.setdefault(info.pack_id, _Pack(info.pack_id))
            for entry in info.blobs:
                pack.entries.setdefault(entry.hash, entry)
    return packs


def _sorted(entries: Iterable[PackedBlob]) -> list[PackedBlob]:
    """Entries by offset, without overlaps (an index may not list overlapping ranges)."""
    found, end = [], 0
    for entry in sorted(entries, key=lambda e: e.offset):
        if entry.offset >= end:
            found.append(entry)
            end = entry.offset + entry.length
    return found


GAP = 1 << 20  # live blobs closer than this are read in one range
SPAN = 64 << 20  # at most this many bytes per read


def _repack(remote: Remote, pack_id: str, wanted: list[PackedBlob]) -> PackInfo:
    """Copy the stored bytes of `wanted` (sorted by offset) from pack `pack_id` into a new
    pack; returns it. Neighbouring blobs are read in one ranged request. The bytes are
    copied as stored (compressed or raw) and checked by the next reader, as every fetched
    blob is."""
    import blake3

    key = remote.pack_key(pack_id)
    groups: list[list[PackedBlob]] = []
    for entry in wanted:
        last = groups[-1] if groups else None
        if (
            last is not None
            and entry.offset - (last[-1].offset + last[-1].length) <= GAP
            and entry.offset + entry.length - last[0].offset <= SPAN
        ):
            last.append(entry)
        else:
            groups.append([entry])
    parts, entries, offset = [], [], 0
    for group in groups:
        start = group[0].offset
        data = remote.get_range(key, start, group[-1].offset + group[-1].length)
        for entry in group:
            parts.append(data[entry.offset - start : entry.offset - start + entry.length])
            entries.append(entry._replace(pack="", offset=offset))
            offset += entry.length
    data = b"".join(parts)
    new_id = blake3.blake3(data).hexdigest()
    remote.put_bytes(remote.pack_key(new_id), data)
    return PackInfo(new_id, tuple(e._replace(pack=new_id) for e in entries))


def _raced(
    remote: Remote,
    known: set[str],
    written: str,
    dropped: list[str],
    packs: dict[str, _Pack],
) -> bool:
    """Whether an index written since gc began names a pack in `dropped`, or a run record
    in it names a blob only such a pack holds (a push that relied on a blob it saw on
    the remote); an unreadable new index counts as such."""
    fresh = [i for i in remote.list_indexes() if i not in known and i != written]
    doomed = set(dropped)
    for ident in fresh:
        try:
            index = decode_index(remote.get_bytes(remote.index_key(ident)), f"index {ident}")
        except PivotError:
            return True
        if doomed.intersection(p.pack_id for p in index.packs):
            return True
        needed = {o["hash"] for _, record in index.runs for o in decode_record(record, "").values()}
        if any(needed.intersection(packs[name].entries) for name in doomed if name in packs):
            return True
    return False
