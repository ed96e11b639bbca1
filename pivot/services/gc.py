"""The work behind `gc`: what the lock files and tracked records of the workspace and of
git's branches and tags keep alive, and the rest removed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot.cache.gc import GcSummary, collect_garbage
from pivot.project import Project
from pivot.services.reachable import Live, live_data

if TYPE_CHECKING:
    from pivot.remote.gc import RemoteGcSummary


@dataclass
class LocalGc:
    """A local gc: what it removed (or would), what it read to decide, the removed objects
    no configured remote holds, and the remotes that could not be checked for them."""

    summary: GcSummary
    live: Live
    unpushed: list[str] = field(default_factory=list)
    unpushed_bytes: int = 0
    unchecked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "reach": self.live.reach,
            "revisions": self.live.revisions,
            "unpushed_removed": len(self.unpushed),
            "unpushed_bytes": self.unpushed_bytes,
            "unchecked_remotes": self.unchecked,
        }


def gc(
    dry_run: bool,
    reach: str,
    on_unpushed: Callable[[list[str], int, list[str]], None] = lambda d, n, u: None,
) -> LocalGc:
    """Remove (or with `dry_run` count) what nothing within `reach` references; objects
    no remote holds are handed to `on_unpushed` (with the remotes that could not be
    checked, each a sentence) before anything is deleted."""
    project = Project.discover()
    with project.exclusive("gc", sweep=False):  # gc removes and counts the temp files
        live = live_data(project, reach)
        runs, outputs = live.run_keys, live.outputs
        planned = collect_garbage(project, runs, outputs, True, runs_named_by_outputs=True)
        unpushed, unchecked = _unpushed(project, planned.removed)
        nbytes = _sizes(project, unpushed)
        if unpushed:
            on_unpushed(unpushed, nbytes, unchecked)
        if not dry_run:
            planned = collect_garbage(project, runs, outputs, runs_named_by_outputs=True)
        return LocalGc(planned, live, unpushed, nbytes, unchecked if unpushed else [])


def _unpushed(project: Project, removed: list[str]) -> tuple[list[str], list[str]]:
    """The digests among `removed` that no configured remote holds, and why each remote
    that could not be checked was not (it counts as holding none of them).

    A remote's cached indexes are trusted only while its identity object (one small
    read) is the one recorded when they were listed: a remote emptied or replaced by hand
    has lost or changed it, and is listed again (`RemoteIndexCache.refresh`)."""
    if not removed:
        return [], []
    from pivot import config
    from pivot.cache.state import StateDB
    from pivot.errors import PivotError
    from pivot.remote import identity
    from pivot.remote.index_cache import RemoteIndexCache
    from pivot.run.remote_view import open_configured

    held: set[str] = set()
    unchecked: list[str] = []
    state = StateDB(project.state_path)
    try:
        for name in config.remotes(project):
            remote = None
            try:
                remote = open_configured(project, name)
                index = RemoteIndexCache(state, remote)
                seen = identity.read(remote, state, index.tag)
                if seen is not None and seen == identity.recorded(state, index.tag):
                    held.update(index.load().blobs)
                    continue
                held.update(index.refresh().blobs)
                # Listed under the id read before the listing (as a push records it).
                identity.record(state, index.tag, seen)
            except PivotError as exc:
                shown = remote.display if remote is not None else repr(name)
                unchecked.append(f"{shown}: {_reason(str(exc).strip(), shown)}")
    finally:
        state.close()
    return [digest for digest in removed if digest not in held], unchecked


def _reason(message: str, shown: str) -> str:
    """`message` (secrets already redacted) without its leading "Cannot ... remote X: "."""
    head, sep, rest = message.partition(f"remote {shown}: ")
    return rest if sep and head.startswith("Cannot ") else message


def _sizes(project: Project, digests: list[str]) -> int:
    from pivot.cache.objects import LocalCache

    return sum(LocalCache(project.cache_dir, project.tmp_dir).sizes(digests).values())


def gc_remote(
    remote_name: str | None, dry_run: bool, reach: str, grace_hours: float | None = None
) -> RemoteGcSummary:
    """Remove (or with `dry_run` count) the packs and indexes of a remote that nothing
    within `reach` needs, sparing everything younger than the grace period."""
    from pivot import config
    from pivot.cache.hashing import DIR, FILE
    from pivot.cache.objects import LocalCache
    from pivot.cache.state import StateDB
    from pivot.remote import transfer
    from pivot.remote.gc import collect_remote
    from pivot.remote.index_cache import RemoteIndexCache
    from pivot.run.remote_view import open_configured

    project = Project.discover()
    hours = config.gc_grace_hours(project) if grace_hours is None else grace_hours
    remote = open_configured(project, remote_name)
    with project.exclusive("gc"):
        live = live_data(project, reach)
        state = StateDB(project.state_path)
        try:
            index_cache = RemoteIndexCache(state, remote)
            contents = index_cache.refresh()
            trees = [h for h, kind in live.outputs if kind == DIR]
            cache = LocalCache(project.cache_dir, project.tmp_dir)
            absent = [(h, FILE) for h in trees if not cache.has(h) and h in contents.blobs]
            if absent:  # manifests: what a folder output keeps alive
                transfer.fetch_outputs(project, remote, absent)
            blobs = {h for h, _ in live.outputs}
            for digest in trees:
                if cache.has(digest):
                    blobs.update(e.hash for e in cache.tree(digest))
            indexes = index_cache.decoded(contents.index_ids)
            summary = collect_remote(
                remote, indexes, blobs, live.run_keys, hours * 3600, dry_run=dry_run
            )
            if not dry_run:
                index_cache.refresh()  # forget the indexes gc removed
            return summary
        finally:
            state.close()
