"""Garbage collection of the local cache: drop what the caller does not name as live.

The caller names the live run records (by run key) and outputs (hash, kind); live blobs
are those outputs and the outputs of the live run records, with tree manifests' entries.
Everything else in `.pivot/cache` is removed; a local pack goes when none of its blobs is
live (it is kept whole otherwise), and so does a pack file an interrupted fetch left
without index. So do the cache temp files in `.pivot/tmp/` that interrupted commands
left, and the damaged objects set aside in `.pivot/cache/quarantine/`.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot._fs import remove_quietly
from pivot.cache.hashing import DIR, is_hash
from pivot.cache.objects import LocalCache
from pivot.cache.runs import RunRecords

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pivot.project import Project


@dataclass
class GcSummary:
    objects_removed: int = 0
    bytes_removed: int = 0
    runs_removed: int = 0
    objects_kept: int = 0
    runs_kept: int = 0
    leftovers_removed: int = 0
    dry_run: bool = False
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "removed"}


def live_blobs(cache: LocalCache, outputs: Iterable[tuple[str, str]]) -> set[str]:
    """Every blob the outputs need; a tree's entries count when its manifest is local."""
    live: set[str] = set()
    for digest, kind in outputs:
        live.add(digest)
        if kind == DIR and cache.has(digest):
            live.update(e.hash for e in cache.tree(digest))
    return live


def collect_garbage(
    project: Project,
    live_runs: Iterable[str],
    live_outputs: Iterable[tuple[str, str]],
    dry_run: bool = False,
    runs_named_by_outputs: bool = False,
) -> GcSummary:
    """Remove the cache objects and run records that neither `live_runs` (run keys) nor
    `live_outputs` ((hash, kind) pairs) need.

    With `runs_named_by_outputs`, the caller vouches that `live_outputs` already hold the
    outputs of every live run (its lock files name them), so no live record is read; and
    a record all of whose outputs are live is kept too (it costs nothing)."""
    cache = LocalCache(project.cache_dir, project.tmp_dir)
    runs = RunRecords(project.cache_dir)
    live_runs = set(live_runs)
    outputs = list(live_outputs)
    kept_outputs = set(outputs) if runs_named_by_outputs else set()
    for key in () if runs_named_by_outputs else live_runs:
        record = runs.get(key)
        if record:
            outputs.extend((o["hash"], o["kind"]) for o in record.values())
    live = live_blobs(cache, outputs)
    summary = GcSummary(dry_run=dry_run)
    if cache.objects.is_dir():
        for shard in sorted(cache.objects.iterdir()):
            if not _is_folder(shard):
                continue
            for entry in sorted(shard.iterdir()):
                digest = shard.name + entry.name
                if not is_hash(digest) or digest in live:
                    summary.objects_kept += 1
                    continue
                summary.objects_removed += 1
                summary.bytes_removed += entry.lstat().st_size
                summary.removed.append(digest)
                if not dry_run:
                    os.unlink(entry)
    _collect_packs(cache, live, summary)
    _collect_leftovers(project, cache, summary)
    for key in runs.keys():  # noqa: SIM118 (RunRecords is not a dict)
        if key in live_runs or (kept_outputs and _outputs_kept(runs, key, kept_outputs)):
            summary.runs_kept += 1
            continue
        summary.runs_removed += 1
        if not dry_run:
            os.unlink(runs.path(key))
    return summary


def _outputs_kept(runs: RunRecords, key: str, kept: set[tuple[str, str]]) -> bool:
    """Whether the run record `key` names only outputs in `kept`."""
    record = runs.get(key)
    return bool(record) and all((o["hash"], o["kind"]) in kept for o in record.values())


def _collect_leftovers(project: Project, cache: LocalCache, summary: GcSummary) -> None:
    """Stale cache temp files (gc holds the command lock) and quarantined objects."""
    folder = cache.quarantine_dir
    quarantined = sorted(p for p in folder.iterdir() if is_hash(p.name)) if folder.is_dir() else []
    for path in [*project.stale_temps(), *quarantined]:
        summary.leftovers_removed += 1
        summary.bytes_removed += _size(path)
        if not summary.dry_run:
            remove_quietly(str(path))  # a folder's links are removed, never followed


def _is_folder(path: pathlib.Path) -> bool:
    """Whether `path` is a folder itself, not a link to one (gc never deletes through one)."""
    return stat.S_ISDIR(path.lstat().st_mode)


def _size(path: pathlib.Path) -> int:
    """Bytes of a file or link, or of every file under a folder (links not followed)."""
    if not _is_folder(path):
        return path.lstat().st_size
    return sum(
        os.lstat(os.path.join(folder, name)).st_size
        for folder, _, names in os.walk(path)
        for name in names
    )


def _collect_packs(cache: LocalCache, live: set[str], summary: GcSummary) -> None:
    store = cache.packs
    for pack, digests in store.indexes().items():
        if digests & live and store.pack_path(pack).exists():
            summary.objects_kept += len(digests)
            continue
        summary.objects_removed += len(digests)
        with contextlib.suppress(FileNotFoundError):
            summary.bytes_removed += store.pack_path(pack).stat().st_size
        summary.removed.extend(sorted(digests))
        if not summary.dry_run:
            store.remove(pack)
    for orphan in store.orphans():
        summary.bytes_removed += orphan.stat().st_size
        if not summary.dry_run:
            orphan.unlink()
