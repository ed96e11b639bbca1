"""The work behind `gc`: what the lock files keep alive, and the rest removed."""

from __future__ import annotations

from pivot.cache.gc import GcSummary, collect_garbage
from pivot.project import Project
from pivot.run.lockfile import live, load_locks


def gc(dry_run: bool) -> GcSummary:
    """Remove (or with `dry_run` count) what no lock file of the project references."""
    project = Project.discover()
    with project.exclusive("gc", sweep=False):  # gc removes and counts the temp files
        return collect_garbage(project, *live(load_locks(project)), dry_run=dry_run)
