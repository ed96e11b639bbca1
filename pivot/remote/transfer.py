"""Push and fetch: plan which blobs move, pack them, and move them concurrently.

Push sends only what the remote's indexes do not list, as packs, and writes an index
only after every pack it names is stored. Fetch groups the wanted blobs by pack,
range-reads neighbours together, verifies every blob's BLAKE3, and only then lets it
into the local cache.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, BinaryIO, ParamSpec, Protocol, TypeVar

from pivot.cache import encoding
from pivot.cache.batch import CacheBatch
from pivot.cache.checkout import LinkMode
from pivot.cache.encoding import PackedBlob
from pivot.cache.hashing import (
    DIR,
    TreeEntry,
    copy_hashing,
    hash_bytes,
    new_hasher,
    stream_hashing,
)
from pivot.cache.objects import LocalCache
from pivot.cache.runs import decode_record, encode_record
from pivot.cache.state import StateDB
from pivot.cache.workspace import StreamedOutput, Workspace, workspace_of
from pivot.errors import DamagedBlob, PivotError, RemoteCorrupt, RemoteIncomplete, writing
from pivot.remote import identity, packs
from pivot.remote.held import HeldMemo
from pivot.remote.index_cache import RemoteContents, RemoteIndexCache
from pivot.remote.stores import Remote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from pivot.cache.runs import Produced
    from pivot.project import Project

# Blobs above this size get a pack of their own and are streamed (bounded memory).
LARGE = 16 << 20
PACK_MIN = 4 << 20
PACK_MAX = 64 << 20
# Small blobs are split into about this many packs per job (within PACK_MIN..PACK_MAX):
# a job uploads one pack while the others read and compress theirs, instead of every job
# reading first and all uploading together at the end.
PACKS_PER_JOB = 4
# An index is written after each batch of packs holding about this many raw bytes,
# so an interrupted large push keeps most of its progress.
BATCH_BYTES = 1 << 30
# Range reads of one pack are merged across gaps up to GAP, up to RANGE_MAX per read.
GAP = 1 << 20
RANGE_MAX = 64 << 20
# A large compressed blob is uploaded in parts of PART bytes (more for blobs so big that
# they would need over MAX_PARTS parts; S3 allows 10,000).
PART = 8 << 20
MAX_PARTS = 9000
DEFAULT_JOBS = 8
# Large blobs moving at once: each holds up to ~s3.CHUNK x s3.CONCURRENCY in buffers, and
# loopback servers gain nothing from more; this keeps RSS flat whatever the output sizes.
LARGE_PARALLEL = 2
# Tree outputs of at least STREAM_MIN files are checked out while they are fetched (each
# with a child process creating its files), at most STREAMS of them per pull.
STREAM_MIN = 1000
STREAMS = 2
# While a checkout takes blobs as they arrive, ranges are read in parts of at most this
# much: the first verified blobs reach it sooner than when every job reads a whole pack.
STREAM_RANGE = 1 << 20
_large_slots = threading.BoundedSemaphore(LARGE_PARALLEL)

Output = tuple[str, str]  # (hash, kind)
P = ParamSpec("P")
R = TypeVar("R")


def _without_cyclic_gc(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` with Python's cyclic garbage collector paused (reference counting still
    frees everything): a transfer of 100,000 files makes millions of small acyclic objects
    (tree entries, pack locations), and each collection walked all of them again (7 % of
    a 10,000-file pull's CPU)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        paused = gc.isenabled()
        gc.disable()
        try:
            return func(*args, **kwargs)
        finally:
            if paused:
                gc.enable()

    return wrapper


class Progress(Protocol):
    """Receives progress from worker threads (implementations must be thread-safe)."""

    def add_total(self, blobs: int, nbytes: int) -> None: ...

    def advance(self, blobs: int, nbytes: int) -> None: ...


class _NoProgress:
    def add_total(self, blobs: int, nbytes: int) -> None:
        pass

    def advance(self, blobs: int, nbytes: int) -> None:
        pass


@dataclass
class TransferSummary:
    """What one push or fetch did."""

    action: str
    remote: str
    blobs: int = 0
    raw_bytes: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    packs: int = 0
    indexes: int = 0
    runs: int = 0
    up_to_date: int = 0
    missing: list[str] = field(default_factory=list)
    missing_runs: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Where the blobs a push sent now lie on the remote (hash -> location).
    stored: dict[str, PackedBlob] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def to_dict(self) -> dict[str, Any]:
        data = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("_lock", "stored")
        }
        data["missing"] = list(self.missing)
        data["missing_runs"] = list(self.missing_runs)
        data["damaged"] = list(self.damaged)
        data["seconds"] = round(self.seconds, 3)
        return data

    def line(self) -> str:
        verb = {"push": "pushed", "fetch": "fetched", "pull": "pulled"}.get(self.action)
        moved = self.bytes_sent if self.action == "push" else self.bytes_received
        direction = "sent" if self.action == "push" else "received"
        parts = [
            f"{verb} {self.blobs} blob{'s' * (self.blobs != 1)}",
            f"{human_bytes(moved)} {direction} ({human_bytes(self.raw_bytes)} raw)",
        ]
        if self.runs:
            parts.append(f"{self.runs} run record{'s' * (self.runs != 1)}")
        if self.up_to_date:
            parts.append(f"{self.up_to_date} already there")
        if self.missing:
            parts.append(f"{len(self.missing)} missing")
        return f"{', '.join(parts)} in {self.seconds:.2f} s [{self.remote}]"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def default_jobs(remote: Remote, jobs: int | None = None) -> int:
    if jobs:
        return max(1, int(jobs))
    configured = remote.options.get("jobs")
    return max(1, int(configured)) if configured else DEFAULT_JOBS


def lock_outputs(locks: Iterable[Produced]) -> list[Output]:
    """The (hash, kind) of every output the locks name."""
    return [(o["hash"], o["kind"]) for lock in locks for o in lock.outs.values()]


class _Context:
    """What push, fetch and pull share: the project's workspace (cache, records, state)
    and the remote. A workspace the caller opened (`ws`) stays open after `close`."""

    def __init__(
        self,
        project: Project,
        remote: Remote,
        jobs: int | None,
        progress,
        ws: Workspace | None = None,
    ) -> None:
        self.project = project
        self.remote = remote
        self.jobs = default_jobs(remote, jobs)
        self.progress: Progress = progress or _NoProgress()
        self._own = ws is None
        self.ws = workspace_of(project) if ws is None else ws
        self.cache = self.ws.cache
        self.runs = self.ws.runs
        self.state = self.ws.state
        self.index = RemoteIndexCache(self.state, remote)

    def close(self) -> None:
        if self._own:
            self.state.close()
        else:
            self.state.commit()


def remote_contents(project: Project, remote: Remote, refresh: bool = True) -> RemoteContents:
    """What the remote holds, from its cached indexes (refreshed with one listing)."""
    state = StateDB(project.state_path, must_save=lambda: bool(project.changed_by))
    try:
        cache = RemoteIndexCache(state, remote)
        return cache.refresh() if refresh else cache.load()
    finally:
        state.close()


# ----------------------------------------------------------------------------- push


def _expand(
    cache: LocalCache,
    outputs: Iterable[Output],
    contents: RemoteContents,
    trees: dict[str, list[TreeEntry]],
    damaged: list[str] | None = None,
):
    """Blobs of `outputs` (manifests and their entries) and those that are unavailable.

    A tree whose manifest is not in the local cache is complete on the remote if the
    remote lists its manifest (pushes always send a manifest with its entries). `trees`
    keeps the manifests decoded so far. A damaged manifest is set aside by the cache,
    added to `damaged`, and counts as not in the local cache.
    """
    blobs: dict[str, None] = {}
    unavailable: list[str] = []
    for digest, kind in outputs:
        if digest in blobs:
            continue
        if kind == DIR and digest not in trees and cache.has(digest):
            try:
                trees[digest] = cache.tree(digest)
            except DamagedBlob:
                if damaged is not None:
                    damaged.append(digest)
        if kind == DIR and digest not in trees:
            if digest not in contents.blobs:
                unavailable.append(digest)
            blobs[digest] = None
            continue
        blobs[digest] = None
        if kind == DIR:
            blobs.update(dict.fromkeys(entry.hash for entry in trees[digest]))
    return blobs, unavailable


@_without_cyclic_gc
def push_outputs(
    project: Project,
    remote: Remote,
    outputs: Iterable[Output],
    run_keys: Iterable[str] = (),
    jobs: int | None = None,
    progress: Progress | None = None,
    known_records: dict[str, bytes] | None = None,
    contents: RemoteContents | None = None,
    ws: Workspace | None = None,
) -> TransferSummary:
    """Send the blobs of `outputs` and the run records `run_keys` the remote lacks.

    `contents` is what the caller knows the remote holds: given, the remote is not listed
    and whatever it does not name is sent (a blob already there is sent again, which is
    harmless). A record missing from the local cache is taken from `known_records`
    (encoded from a lock file). A run record is sent only when every blob it names is on the remote
    afterwards. Blobs absent both locally and on the remote are listed in
    `summary.missing`. A local blob found damaged is set aside and not sent; everything
    else is, the index names what was stored, and then DamagedBlob is raised. `ws` is the
    caller's open workspace of `project` (a cluster worker keeps one: opening the state
    database per task cost ~1 ms), left open.
    """
    started = time.perf_counter()
    ctx = _Context(project, remote, jobs, progress, ws)
    summary = TransferSummary("push", remote.display)
    outputs, run_keys = list(outputs), list(dict.fromkeys(run_keys))
    trees: dict[str, list[TreeEntry]] = {}
    try:
        # Indexes are immutable: when the cached ones already list everything, the remote
        # holds it, as long as it is still the remote they were listed from (its identity
        # object, one small read: `identity`), and a no-op push needs no other request.
        # The memo says so without decoding the indexes and manifests, else they are
        # checked (and the memo fed). What a caller says the remote holds (`contents`) is
        # checked as given and not remembered: the memo vouches only through the cached
        # indexes.
        memo = None if contents is not None else HeldMemo(ctx.state, ctx.index.tag)
        seen: str | None = None
        if memo is None:
            held = _held_by(ctx.cache, contents, outputs, run_keys, trees)
        else:
            seen = identity.read(remote, ctx.state, ctx.index.tag)
            held = None
            if seen is not None and seen == identity.recorded(ctx.state, ctx.index.tag):
                held = memo.held(outputs, run_keys, set(ctx.index.cached_ids()))
                if held is None:
                    cached = ctx.index.load()
                    held = _held_by(ctx.cache, cached, outputs, run_keys, trees)
                    if held is not None:
                        memo.record(cached, outputs, run_keys, trees)
        if held is not None:
            summary.up_to_date = held
            summary.seconds = time.perf_counter() - started
            return summary
        remote.create_folder()
        if contents is None:
            contents = ctx.index.refresh(ctx.jobs)
        damaged = summary.damaged
        wanted, unavailable = _expand(ctx.cache, outputs, contents, trees, damaged)
        pending: list[tuple[str, bytes, dict[str, None]]] = []
        for key in run_keys:
            if key in contents.runs:
                continue
            data = ctx.runs.get_bytes(key) or (known_records or {}).get(key)
            if data is None:
                summary.missing_runs.append(key)
                continue
            outs = decode_record(data, f"run record {key[:12]}")
            record_outputs = [(o["hash"], o["kind"]) for o in outs.values()]
            blobs, bad = _expand(ctx.cache, record_outputs, contents, trees, damaged)
            if bad:
                summary.missing_runs.append(key)
            else:
                pending.append((key, data, blobs))
        candidates = dict(wanted)
        for _, _, blobs in pending:
            candidates.update(blobs)
        local = ctx.cache.sizes(d for d in candidates if d not in contents.blobs)
        records: list[tuple[str, bytes, dict[str, None]]] = []
        for key, data, blobs in pending:
            if any(b not in contents.blobs and b not in local for b in blobs):
                summary.missing_runs.append(key)
                continue
            wanted.update(blobs)
            records.append((key, data, blobs))
        send = []
        for digest in wanted:
            if digest in contents.blobs:
                summary.up_to_date += 1
            elif digest in local:
                send.append(digest)
            elif digest not in damaged:
                summary.missing.append(digest)
        summary.missing.extend(
            d for d in unavailable if d not in summary.missing and d not in damaged
        )
        if send or records:
            summary.runs = _Pusher(ctx, summary, contents).run(send, local, records)
        if memo is not None:
            memo.record(contents, outputs, run_keys, trees)
            # The listing above was made under the id read before it; a remote without
            # one gets it now (after what it holds was listed and sent).
            identity.record(ctx.state, ctx.index.tag, seen or identity.create(remote))
    finally:
        ctx.close()
    summary.seconds = time.perf_counter() - started
    if summary.damaged:
        raise _damaged_push(ctx.cache, summary)
    return summary


def _damaged_push(cache: LocalCache, summary: TransferSummary) -> DamagedBlob:
    """The error of a push that met damaged local blobs (after storing everything else)."""
    first = summary.damaged[0]
    more = f" and {len(summary.damaged) - 1} more" if len(summary.damaged) > 1 else ""
    return DamagedBlob(
        f"The local cache object {first}{more} does not match its hash: it is damaged, was "
        f"moved to {cache.quarantine_dir} and was not pushed. Everything else was pushed "
        f"({summary.line()}), except run records naming a damaged object.",
        first,
        hint="repush",
    )


def _held_by(
    cache: LocalCache,
    contents: RemoteContents,
    outputs: list[Output],
    run_keys: list[str],
    trees: dict[str, list[TreeEntry]],
) -> int | None:
    """How many blobs `contents` lists for the push, or None unless it lists them all."""
    if not contents.index_ids or any(key not in contents.runs for key in run_keys):
        return None
    wanted, unavailable = _expand(cache, outputs, contents, trees)
    if unavailable or any(digest not in contents.blobs for digest in wanted):
        return None
    return len(wanted)


def push_locks(
    project: Project,
    remote: Remote,
    locks: Iterable[Produced],
    run_keys: Iterable[str] = (),
    jobs: int | None = None,
    progress: Progress | None = None,
    extra: Iterable[Output] = (),
) -> TransferSummary:
    """Push the outputs of `locks`, their run records, the extra `run_keys` and the
    `extra` outputs (tracked data, which has no run record).

    A lock states what its run key produced, so it stands in for a run record that is
    not in the local cache (after a pull, or in a fresh clone).
    """
    locks = list(locks)
    keys = [lock.run_key for lock in locks] + list(run_keys)
    from_locks = {lock.run_key: encode_record(lock.outs) for lock in locks}
    outputs = lock_outputs(locks) + list(extra)
    return push_outputs(project, remote, outputs, keys, jobs, progress, known_records=from_locks)


_LOOSE = PackedBlob("", 0, 0, 0, 0, "")  # where a loose blob sorts among packed ones


@dataclass
class _PackTask:
    digests: list[str]
    raw: int
    large: bool
    batch: int = 0


class _Pusher:
    def __init__(self, ctx: _Context, summary: TransferSummary, contents: RemoteContents) -> None:
        self.ctx = ctx
        self.summary = summary
        self.contents = contents  # learns each index written

    def plan(self, send: list[str], sizes: dict[str, int]) -> list[_PackTask]:
        tasks = [_PackTask([d], sizes[d], True) for d in send if sizes[d] > LARGE]
        tasks.sort(key=lambda t: -t.raw)
        # In local-pack order, so that each task reads runs of neighbouring blobs with one
        # `pread` each (`LocalCache.read_each`); loose blobs first.
        packed = self.ctx.cache.packs.blobs()
        small = sorted((d for d in send if sizes[d] <= LARGE), key=lambda d: packed.get(d, _LOOSE))
        total = sum(sizes[d] for d in small)
        target = min(PACK_MAX, max(PACK_MIN, math.ceil(total / (self.ctx.jobs * PACKS_PER_JOB))))
        group: list[str] = []
        group_bytes = 0
        for digest in small:
            group.append(digest)
            group_bytes += sizes[digest]
            if group_bytes >= target:
                tasks.append(_PackTask(group, group_bytes, False))
                group, group_bytes = [], 0
        if group:
            tasks.append(_PackTask(group, group_bytes, False))
        batch = 0
        batch_bytes = 0
        for task in tasks:
            if batch_bytes >= BATCH_BYTES:
                batch += 1
                batch_bytes = 0
            task.batch = batch
            batch_bytes += task.raw
        return tasks

    def run(
        self,
        send: list[str],
        sizes: dict[str, int],
        records: list[tuple[str, bytes, dict[str, None]]],
    ) -> int:
        """Send the blobs as packs, then an index naming them and the run records whose
        blobs are all stored (a damaged blob is skipped); returns how many records."""
        tasks = self.plan(send, sizes)
        self.ctx.progress.add_total(len(send), sum(t.raw for t in tasks))
        nbatches = (tasks[-1].batch + 1) if tasks else 1
        done: list[list[packs.PackInfo]] = [[] for _ in range(nbatches)]
        remaining = [0] * nbatches
        for task in tasks:
            remaining[task.batch] += 1
        last = nbatches - 1
        pool = ThreadPoolExecutor(self.ctx.jobs, thread_name_prefix="pivot-push")
        try:
            pending: dict[Future, _PackTask] = {pool.submit(self.send_pack, t): t for t in tasks}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    task = pending.pop(future)
                    info = future.result()
                    if info is not None:
                        done[task.batch].append(info)
                    remaining[task.batch] -= 1
                    if remaining[task.batch] == 0 and task.batch != last:
                        self.write_index(done[task.batch], [])
            damaged = set(self.summary.damaged)
            intact = [(key, data) for key, data, blobs in records if damaged.isdisjoint(blobs)]
            self.write_index(done[last], intact)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return len(intact)

    def write_index(self, infos: list[packs.PackInfo], records: list[tuple[str, bytes]]) -> None:
        if not infos and not records:
            return
        size = store_index(self.ctx.remote, self.ctx.index, infos, records, self.contents)
        self.summary.add(indexes=1, bytes_sent=size)

    def send_pack(self, task: _PackTask) -> packs.PackInfo | None:
        """Store one pack; None if every blob of it was damaged (and set aside)."""
        try:
            if task.large:
                with _large_slots:
                    info, stored = self._large(task.digests[0])
            else:
                info, stored = self._small(task.digests)
        except DamagedBlob as exc:
            self._damaged(exc.digest)
            return None
        if info is None:
            return None
        sent = len(info.blobs)
        raw = sum(entry.size for entry in info.blobs)
        self.summary.add(blobs=sent, raw_bytes=raw, bytes_sent=stored, packs=1)
        with self.summary._lock:
            self.summary.stored.update((entry.hash, entry) for entry in info.blobs)
        self.ctx.progress.advance(len(task.digests), task.raw)
        return info

    def _damaged(self, digest: str) -> None:
        with self.summary._lock:
            self.summary.damaged.append(digest)

    def _small(self, digests: list[str]) -> tuple[packs.PackInfo | None, int]:
        """Pack the blobs (a damaged one is set aside and left out) and store the pack."""
        cache = self.ctx.cache
        builder = packs.PackBuilder()
        for digest, data in cache.read_each(digests):
            if isinstance(data, DamagedBlob):
                self._damaged(digest)
            else:
                builder.add(digest, data)
        if not builder.entries:
            return None, 0
        data, info = builder.finish()
        self.ctx.remote.put_bytes(Remote.pack_key(info.pack_id), data)
        return info, len(data)

    def _large(self, digest: str) -> tuple[packs.PackInfo, int]:
        """Send one large blob as a pack of its own, part by part while its file is read
        (and compressed when that pays): the first parts travel while the rest is being
        read, nothing goes through a temp file, and the file is read once."""
        cache = self.ctx.cache
        src = cache.path(digest)
        size = os.stat(src).st_size
        codec = encoding.ZSTD if packs.compresses(src, size) else encoding.RAW
        part_size = max(PART, math.ceil(size / MAX_PARTS))
        stream = packs.StoredFile(src, size, part_size, codec)

        def verified_parts() -> Iterator[bytes]:
            yield from stream.parts()
            if stream.source_hash != digest:  # the upload is abandoned, not completed
                raise cache.damaged(digest)

        pack_id = packs.large_pack_id(digest, codec)
        self.ctx.remote.put_parts(Remote.pack_key(pack_id), verified_parts())
        entry = PackedBlob(pack_id, 0, stream.stored, size, codec, digest)
        return packs.PackInfo(pack_id, (entry,)), stream.stored


def store_index(
    remote: Remote,
    index_cache: RemoteIndexCache,
    infos: list[packs.PackInfo],
    records: list[tuple[str, bytes]],
    contents: RemoteContents | None = None,
) -> int:
    """Write one index naming `infos` (all already stored) and `records`, and add it to
    `contents`; returns its size."""
    infos = sorted(infos, key=lambda p: p.pack_id)
    data = packs.encode_index(infos, records)
    ident = packs.index_id(data)
    remote.put_bytes(Remote.index_key(ident), data)
    index_cache.remember(ident, data)
    if contents is not None:
        contents.add(packs.Index(tuple(infos), tuple(records)), ident)
    return len(data)


# ----------------------------------------------------------------------------- fetch


@_without_cyclic_gc
def fetch_outputs(
    project: Project,
    remote: Remote,
    outputs: Iterable[Output],
    run_keys: Iterable[str] = (),
    jobs: int | None = None,
    progress: Progress | None = None,
    contents: RemoteContents | None = None,
    ws: Workspace | None = None,
) -> TransferSummary:
    """Bring the blobs of `outputs` (and of the run records `run_keys`) into the cache.

    `contents` is what the caller knows the remote holds (where its blobs lie): given, the
    remote is not listed. Run records found on the remote are stored locally. Blobs the
    remote does not hold are listed in `summary.missing`, unknown run keys in
    `summary.missing_runs`. `ws`: as for `push_outputs`.
    """
    started = time.perf_counter()
    ctx = _Context(project, remote, jobs, progress, ws)
    summary = TransferSummary("fetch", remote.display)
    try:
        if contents is None:
            contents = ctx.index.refresh(ctx.jobs)
        outputs = list(outputs)
        for key in dict.fromkeys(run_keys):
            data = ctx.runs.get_bytes(key)
            if data is None:
                data = contents.runs.get(key)
                if data is None:
                    summary.missing_runs.append(key)
                    continue
                ctx.runs.put_bytes(key, data, f"run record {key[:12]} from {remote.display}")
                summary.add(runs=1)
            outs = decode_record(data, f"run record {key[:12]}")
            outputs.extend((o["hash"], o["kind"]) for o in outs.values())
        _Fetcher(ctx, contents, summary).fetch_outputs(outputs)
    finally:
        ctx.close()
    summary.seconds = time.perf_counter() - started
    return summary


def fetch_locks(
    project: Project,
    remote: Remote,
    locks: Iterable[Produced],
    jobs: int | None = None,
    progress: Progress | None = None,
) -> TransferSummary:
    """Fetch every output the locks name (their run records are not needed locally)."""
    return fetch_outputs(project, remote, lock_outputs(locks), (), jobs, progress)


def _blobs_of(cache: LocalCache, digest: str, kind: str) -> set[str]:
    """The blobs of an output the cache holds the tree manifest of (or a file)."""
    if kind != DIR:
        return {digest}
    try:
        return {digest, *(e.hash for e in cache.tree(digest))}
    except DamagedBlob:
        return set()


@dataclass
class _Read:
    pack_id: str
    items: list[tuple[PackedBlob, str]]

    @property
    def start(self) -> int:
        return self.items[0][0].offset

    @functools.cached_property
    def end(self) -> int:  # items are not changed once planned
        return max(loc.offset + loc.length for loc, _ in self.items)


def _offset(item: tuple[PackedBlob, str]) -> int:
    return item[0].offset


class _Fetcher:
    def __init__(self, ctx: _Context, contents: RemoteContents, summary: TransferSummary):
        self.ctx = ctx
        self.contents = contents
        self.summary = summary
        # Called with the (hash, content) pairs of each verified range as it arrives,
        # before they are committed (a pull checks them out meanwhile).
        self.arrived: Callable[[list[tuple[str, bytes]]], object] | None = None
        self.range_max = RANGE_MAX

    def plan(self, digests: list[str]) -> list[_Read]:
        by_pack: dict[str, list[tuple[PackedBlob, str]]] = defaultdict(list)
        for digest in digests:
            loc = self.contents.blobs.get(digest)
            if loc is None:
                self.summary.missing.append(digest)
            else:
                by_pack[loc.pack].append((loc, digest))
        reads: list[_Read] = []
        for pack_id, items in by_pack.items():
            items.sort(key=_offset)  # one pack: by offset (comparing whole rows was slower)
            current: list[tuple[PackedBlob, str]] = []
            for loc, digest in items:
                if _is_large(loc):
                    reads.append(_Read(pack_id, [(loc, digest)]))
                    continue
                if current:
                    first = current[0][0].offset
                    last_end = current[-1][0].offset + current[-1][0].length
                    too_long = loc.offset + loc.length - first > self.range_max
                    if loc.offset - last_end > GAP or too_long:
                        reads.append(_Read(pack_id, current))
                        current = []
                current.append((loc, digest))
            if current:
                reads.append(_Read(pack_id, current))
        reads.sort(key=lambda r: -(r.end - r.start))
        return reads

    def fetch_outputs(
        self, outputs: Iterable[Output], before: Callable[[], object] | None = None
    ) -> None:
        """Fetch what the cache lacks of `outputs`: tree manifests first, then entries.
        `before` is called before each of the two rounds (the trees whose manifests are
        in the cache by then may start their checkouts)."""
        cache = self.ctx.cache
        need: dict[str, None] = {}
        trees: list[str] = []
        local: set[str] = set()  # blobs already in the cache: counted as up to date
        for digest, kind in dict.fromkeys(outputs):
            if kind == DIR and not cache.has(digest):
                trees.append(digest)
                need[digest] = None
            else:
                missing = cache.missing(digest, kind)
                need.update(dict.fromkeys(missing))
                local.update(_blobs_of(cache, digest, kind) - set(missing))
        if before is not None:
            before()
        self.fetch(list(need))
        need = {}
        for digest in trees:
            if cache.has(digest):
                missing = cache.missing(digest, DIR)
                need.update(dict.fromkeys(missing))
                local.update(_blobs_of(cache, digest, DIR) - {digest, *missing})
        self.summary.add(up_to_date=len(local - set(need)))
        if before is not None:
            before()
        self.fetch(list(need))

    def fetch(self, digests: list[str]) -> None:
        if not digests:
            return
        reads = self.plan(digests)
        if not reads:
            return
        self.ctx.progress.add_total(
            sum(len(r.items) for r in reads), sum(loc.size for r in reads for loc, _ in r.items)
        )
        # Verified blobs are staged and published together when the batch ends (also
        # after an error: what was verified is kept; an interrupt discards it).
        with self.ctx.cache.batch() as batch:
            pool = ThreadPoolExecutor(self.ctx.jobs, thread_name_prefix="pivot-fetch")
            try:
                futures = [pool.submit(self.read, r, batch) for r in reads]
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()
                for future in futures:
                    future.result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _corrupt(self, pack_id: str, digest: str, why: str) -> RemoteCorrupt:
        remote = self.ctx.remote
        return RemoteCorrupt(
            f"Remote {remote.display}: blob {digest} in pack {pack_id} "
            f"({Remote.pack_key(pack_id)}) {why}. The pack is damaged; the blob was not "
            f"stored in the local cache. Push the output again from a machine that has it "
            f"intact (after removing the damaged index and pack from the remote).",
            remote=remote.name,
            display=remote.display,
            key=Remote.pack_key(pack_id),
            digest=digest,
        )

    def read(self, read: _Read, batch: CacheBatch) -> None:
        if len(read.items) == 1 and _is_large(read.items[0][0]):
            with _large_slots:
                self._read_large(read.pack_id, *read.items[0], batch)
            return
        start, end = read.start, read.end
        data = self.ctx.remote.get_range(Remote.pack_key(read.pack_id), start, end)
        view = memoryview(data)
        raw = 0
        verified = []
        arrived = []
        for loc, digest in read.items:
            stored = view[loc.offset - start : loc.offset - start + loc.length]
            try:
                blob = encoding.decode_blob(stored, loc.codec, loc.size)
            except ValueError as exc:
                raise self._corrupt(read.pack_id, digest, f"does not decode ({exc})") from None
            if len(blob) != loc.size or hash_bytes(blob) != digest:
                raise self._corrupt(read.pack_id, digest, "does not match its BLAKE3 hash")
            verified.append((loc, stored))
            arrived.append((digest, blob))
            raw += loc.size
        # Kept as fetched, one local pack per read: one file instead of one per blob.
        batch.put_packed(verified)
        if self.arrived is not None:
            self.arrived(arrived)
        self.summary.add(blobs=len(read.items), raw_bytes=raw, bytes_received=end - start)
        self.ctx.progress.advance(len(read.items), raw)

    def _read_large(self, pack_id: str, loc: PackedBlob, digest: str, batch: CacheBatch) -> None:
        """Stream one large blob into a cache temp file, verify it, make it durable now
        (while other blobs still move, rather than all at the batch's commit)."""
        key = Remote.pack_key(pack_id)
        out_tmp = batch.temp_path()
        try:
            if loc.codec == encoding.RAW and loc.offset == 0 and pack_id == digest:
                # A raw single-blob pack: downloaded in parallel parts straight into place.
                self.ctx.remote.get_file(key, out_tmp)
                fd = os.open(out_tmp, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    size, actual = copy_hashing(fd, None, hasher=new_hasher())
                finally:
                    os.close(fd)
            else:
                with writing(out_tmp), open(out_tmp, "wb") as out:

                    def consume(stream: BinaryIO) -> tuple[int, str]:
                        try:
                            with writing(out_tmp):
                                if loc.codec == encoding.RAW:
                                    return stream_hashing(stream, out)
                                return packs.decompress_stream(stream, out)
                        except ValueError as exc:
                            why = f"does not decode ({exc})"
                            raise self._corrupt(pack_id, digest, why) from None

                    # A zstd frame alone in its pack is read whole: that pack's name does
                    # not depend on the compressed bytes (see packs.large_pack_id).
                    whole = loc.offset == 0 and loc.codec == encoding.ZSTD
                    end = None if whole else loc.offset + loc.length
                    size, actual = self.ctx.remote.read_range(key, loc.offset, end, consume)
            if size != loc.size or actual != digest:
                raise self._corrupt(pack_id, digest, "does not match its BLAKE3 hash")
            fd = os.open(out_tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            batch.adopt(out_tmp, digest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out_tmp)
            raise
        self.summary.add(blobs=1, raw_bytes=loc.size, bytes_received=loc.length)
        self.ctx.progress.advance(1, loc.size)


def _is_large(loc: PackedBlob) -> bool:
    """Whether a blob streams through a temp file rather than being decoded in memory."""
    return loc.size > LARGE or loc.length > LARGE


# ----------------------------------------------------------------------------- pull


@dataclass
class PullResult:
    summary: TransferSummary
    checked_out: list[str]
    incomplete: list[str]


@_without_cyclic_gc
def pull_locks(
    project: Project,
    remote: Remote,
    locks: Iterable[Produced],
    jobs: int | None = None,
    progress: Progress | None = None,
    link: LinkMode = LinkMode.COPY,
) -> PullResult:
    """Fetch the outputs of `locks`, then check each complete one out into the workspace.

    Each large file is fetched on its own and checked out as soon as it is in the cache,
    while the directories and small files are fetched together, then checked out
    (creating many files is bound by the filesystem, downloading by the network); a large
    directory output new to the workspace is written as its blobs arrive (`_Streams`).
    Every other output is placed by `Workspace.place_output`, as `run` and `checkout`
    place theirs; either way the stat cache learns the pulled files.
    """
    started = time.perf_counter()
    locks = list(locks)
    items = [(path, out) for lock in locks for path, out in sorted(lock.outs.items())]
    owners = {path: f"the output of {lock.stage_id}" for lock in locks for path in lock.outs}
    for path, _ in items:  # refused before anything is fetched
        project.write_path(path, owners[path])
    large = [i for i in items if i[1]["kind"] != DIR and i[1]["size"] > LARGE]
    small = [i for i in items if i[1]["kind"] == DIR or i[1]["size"] <= LARGE]
    ctx = _Context(project, remote, jobs, progress)
    summary = TransferSummary("pull", remote.display)
    cache = ctx.cache
    incomplete: list[str] = []

    def refetch(digest: str, kind: str) -> None:
        """Fetch again what a damaged local copy of an output lacks now."""
        fetcher.fetch_outputs([(digest, kind)])
        if cache.missing(digest, kind):
            raise RemoteIncomplete(
                f"the remote {remote.display} does not hold it",
                remote=remote.name,
                display=remote.display,
                missing=(digest,),
            )

    def checkout(item: tuple[str, dict]) -> str | None:
        path, out = item
        stream = streams.take(path)
        if cache.missing(out["hash"], out["kind"]):
            if stream is not None:
                stream.discard()
            incomplete.append(path)
            return None
        if stream is not None:
            try:
                stream.finish()
                return path
            except DamagedBlob:  # a local object set aside: fetch it, then as below
                refetch(out["hash"], out["kind"])
        ctx.ws.place_output(path, out, link, owners[path], refetch)
        return path

    streams = _Streams(ctx.ws, small, link, owners)
    pool = ThreadPoolExecutor(max(1, ctx.jobs), thread_name_prefix="pivot-checkout")
    # Each fetched blob is verified once, as it arrives: the checkouts below place the
    # blobs of the packs this pull writes without hashing them again.
    cache.trusting = True
    try:
        fetcher = _Fetcher(ctx, ctx.index.refresh(ctx.jobs), summary)
        fetcher.arrived = streams.offer

        def before_round() -> None:
            streams.start()
            if streams.open:
                fetcher.range_max = STREAM_RANGE

        def fetch_then_checkout(item: tuple[str, dict], lock: threading.Lock) -> str | None:
            with lock:  # outputs with the same content download it once
                fetcher.fetch_outputs([(item[1]["hash"], item[1]["kind"])])
            return checkout(item)

        same_blob: dict[str, threading.Lock] = {}
        futures = []
        for item in large:
            lock = same_blob.setdefault(item[1]["hash"], threading.Lock())
            futures.append(pool.submit(fetch_then_checkout, item, lock))
        failure: PivotError | None = None
        try:
            fetcher.fetch_outputs(((out["hash"], out["kind"]) for _, out in small), before_round)
        except PivotError as exc:
            failure = exc
            streams.discard()
        else:
            futures.extend(pool.submit(checkout, item) for item in small)
        wait(futures)
        placed: list[str] = []
        for future in futures:
            exc = future.exception()
            if exc is None:
                if (path := future.result()) is not None:
                    placed.append(path)
            elif not isinstance(exc, PivotError):
                raise exc
            elif failure is None:
                failure = exc
        if failure is not None:
            # What was checked out is complete: say so, and leave the rest as it was.
            if not placed:
                raise failure
            listed = ", ".join(placed[:5]) + (" ..." if len(placed) > 5 else "")
            raise failure.reworded(
                f"{failure} Before this, {len(placed)} output(s) were checked out in full: "
                f"{listed}; the others were left as they were."
            ) from failure
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        streams.discard()
        cache.trusting = False
        cache.trusted_packs.clear()
        ctx.close()
    summary.seconds = time.perf_counter() - started
    return PullResult(summary, sorted(placed), sorted(incomplete))


class _Streams:
    """The tree outputs of a pull checked out while their blobs are fetched (see
    `cache/streamed.py`): those of at least STREAM_MIN files whose manifests are in the
    cache and whose paths hold nothing yet, the first STREAMS found. The others are
    checked out after the fetch, by `Workspace.place_output`."""

    def __init__(
        self, ws: Workspace, items: list[tuple[str, dict]], link: LinkMode, owners: dict
    ) -> None:
        self.ws = ws
        self.link = link
        self.owners = owners
        self.trees = [(path, out) for path, out in items if out["kind"] == DIR]
        self.tried: set[str] = set()
        self.open: dict[str, StreamedOutput] = {}
        self.lock = threading.Lock()

    def start(self) -> None:
        """Start the checkouts of the trees whose manifests the cache holds now."""
        for path, out in self.trees:
            if len(self.open) >= STREAMS:
                return
            if path in self.tried or not self.ws.cache.has(out["hash"]):
                continue
            self.tried.add(path)
            stream = self.ws.stream_output(path, out, self.link, self.owners[path], STREAM_MIN)
            if stream is None:
                continue
            with self.lock:
                self.open[path] = stream

    def offer(self, blobs: list[tuple[str, bytes]]) -> None:
        """Hand verified blobs to the open checkouts (each takes those its tree holds)."""
        for stream in list(self.open.values()):
            stream.offer(blobs)

    def take(self, path: str) -> StreamedOutput | None:
        """The open checkout of `path` (the caller finishes or discards it)."""
        with self.lock:
            return self.open.pop(path, None)

    def discard(self) -> None:
        """Discard every checkout not taken: nothing of them reaches the workspace."""
        with self.lock:
            streams, self.open = list(self.open.values()), {}
        for stream in streams:
            stream.discard()
