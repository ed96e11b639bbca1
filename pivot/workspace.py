"""The local pieces every command needs: project, state db, hasher, cache, run records."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from pivot.project import Project
from pivot.storage.cache import LocalCache
from pivot.storage.hashing import Hasher
from pivot.storage.runs import RunRecords
from pivot.storage.state import StateDB


@dataclass
class Workspace:
    """One project opened for a command; `state.close()` when done."""

    project: Project
    state: StateDB
    hasher: Hasher
    cache: LocalCache
    runs: RunRecords


def open_workspace(start: pathlib.Path | None = None) -> Workspace:
    project = Project.discover(start)
    state = StateDB(project.state_path)
    return Workspace(
        project=project,
        state=state,
        hasher=Hasher(project.root, state),
        cache=LocalCache(project.cache_dir, project.tmp_dir),
        runs=RunRecords(project.cache_dir),
    )
