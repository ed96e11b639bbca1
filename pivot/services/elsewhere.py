"""Stages outside a command's scope that are not up to date, found cheaply: from lock files,
the stat cache and the scan's cached index, without loading another pipeline's code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pivot.errors import PivotError
from pivot.run.lockfile import all_locks, read_lock

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.discover.scope import Scope


@dataclass
class Elsewhere:
    """Stale stages outside the scope, and their pipelines."""

    stages: list[str]
    pipelines: list[str]


def stale_elsewhere(ws: Workspace, scope: Scope, remote_configured: bool) -> Elsewhere:
    """Stages of other pipelines whose lock file no longer matches the files (a dep or an
    output changed, or is gone with no cached copy to restore), or that never ran (known
    from the scan's index when it is valid). As `run` does, a configured remote is trusted
    to hold what lock files name. Code and param changes need the code loaded: only
    `status --all` sees those."""
    in_scope = set(scope.graph.stages)
    known = scope.discovery.indexed_stages()
    locks = {}
    for sid in all_locks(ws.project.stages_dir):
        try:
            locks[sid] = read_lock(ws.project.stages_dir, sid)
        except PivotError:
            locks[sid] = None
    recorded = {p: o["hash"] for lock in locks.values() if lock for p, o in lock.outs.items()}
    stale = []
    for sid in sorted((set(locks) | set(known or ())) - in_scope):
        if known is not None and sid not in known:
            continue  # the lock file of a stage that is gone
        lock = locks.get(sid)
        if lock is None or _changed(ws, lock.deps, lock.outs, recorded, remote_configured):
            stale.append(sid)
    return Elsewhere(stale, sorted({sid.partition("/")[0] for sid in stale}))


def _changed(
    ws: Workspace,
    deps: dict[str, str],
    outs: dict[str, dict],
    recorded: dict[str, str],
    remote_configured: bool,
) -> bool:
    for path, digest in deps.items():
        found = ws.hasher.hash_path(path)
        if found is None and recorded.get(path) == digest:
            continue  # an upstream output kept in a cache, unchanged
        if found is None or found.hash != digest:
            return True
    for path, out in outs.items():
        found = ws.hasher.hash_path(path)
        if found is None:
            if not remote_configured and ws.cache.missing(out["hash"], out["kind"]):
                return True  # nowhere to restore it from
        elif found.hash != out["hash"]:
            return True
    return False
