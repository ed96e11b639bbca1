"""What a command works on: the stages in scope, and their lock files."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, NamedTuple

from pivot.cache import tracked
from pivot.cache.workspace import open_workspace
from pivot.discover.scope import Scope, resolve_scope
from pivot.errors import PivotError
from pivot.project import PIVOT_DIR, first_overlap
from pivot.run.lockfile import check_disjoint, declared_locks

if TYPE_CHECKING:
    from pivot.cache.tracked import Tracked
    from pivot.cache.workspace import Workspace
    from pivot.discover.finder import Discovery
    from pivot.project import Project
    from pivot.run.lockfile import Lock


def scope_for(targets: tuple[str, ...], all_pipelines: bool) -> Scope:
    """The stages of this pipeline (or every pipeline, or TARGETS) and their upstreams."""
    ws = open_workspace()
    try:
        return resolve_scope(ws, targets, all_pipelines)
    finally:
        ws.state.close()


def scope_locks(project: Project, scope: Scope, every: bool = False) -> list[Lock]:
    """The lock files of the stages in `scope`, in run order, each recording exactly the
    outputs its stage declares (any other is named in a warning and left out); with
    `every`, lock files of no stage in scope are named too."""
    stages = [scope.graph.stages[sid] for sid in scope.graph.order()]
    return declared_locks(project, stages, every)


def data_in_scope(
    ws: Workspace, targets: tuple[str, ...], all_pipelines: bool
) -> tuple[list[Lock], list[Tracked]]:
    """The lock files and the tracked data a command works on: a target may name tracked
    data (or a path in a tracked folder); the stages in scope bring the tracked data they
    read, and `--all` every record."""
    return loaded_data_in_scope(ws, targets, all_pipelines).data


class DataScope(NamedTuple):
    """What `data_in_scope` found, and the pipelines it loaded to find it (`complete`:
    every pipeline of the project)."""

    data: tuple[list[Lock], list[Tracked]]
    discovery: Discovery
    complete: bool


def loaded_data_in_scope(ws: Workspace, targets: tuple[str, ...], all_pipelines: bool) -> DataScope:
    """`data_in_scope`, with the pipelines loaded on the way."""
    from pivot.discover.finder import Discovery

    records = tracked.load_all(ws.project)
    cwd = pathlib.Path.cwd()
    chosen: dict[str, Tracked] = {}
    stage_targets = []
    for target in targets:
        try:
            rel = ws.project.rel(cwd / target)
        except PivotError:
            rel = None
        record = tracked.covering(records, rel) if rel else None
        if record is None:
            stage_targets.append(target)
        else:
            chosen[record.path] = record
    if all_pipelines and not stage_targets:
        discovery = Discovery(ws.project, ws.state)
        stages = [s for p in discovery.load_all() for s in p.stages.values()]
        locks = declared_locks(ws.project, stages, every=True)
        return DataScope((locks, list(records.values())), discovery, True)
    if chosen and not stage_targets:
        return DataScope(([], list(chosen.values())), Discovery(ws.project, ws.state), False)
    scope = resolve_scope(ws, tuple(stage_targets), all_pipelines)
    stages = [scope.graph.stages[sid] for sid in scope.graph.order()]
    for stage in stages:
        for dep in stage.deps:
            record = tracked.covering(records, dep.path)
            if record is not None:
                chosen[record.path] = record
    data = declared_locks(ws.project, stages), list(chosen.values())
    return DataScope(data, scope.discovery, all_pipelines)


def command_locks(
    targets: tuple[str, ...], all_pipelines: bool
) -> tuple[Project, list[Lock], list[Tracked]]:
    """The project, the lock files and the tracked data a transfer command works on
    (`data_in_scope`)."""
    ws = open_workspace()
    try:
        return ws.project, *data_in_scope(ws, targets, all_pipelines)
    finally:
        ws.state.close()


def check_disjoint_data(locks: list[Lock], records: list[Tracked]) -> None:
    """Refuse lock files and tracked data that name overlapping paths, before anything is
    placed (checking both out would overwrite one with the other)."""
    check_disjoint(locks)
    outputs = {path: lock.stage_id for lock in locks for path in lock.outs}
    for record in records:
        for path, stage_id in outputs.items():
            if first_overlap([path, record.path]) is not None:
                raise PivotError(
                    f"The tracked data {record.path!r} (its record is "
                    f"{PIVOT_DIR}/{tracked.FOLDER}/{record.path}{tracked.SUFFIX}) overlaps "
                    f"{path!r}, an output of stage {stage_id}: checking both out would "
                    f"overwrite one with the other, so nothing was checked out. Delete the "
                    f"record (a stage's output cannot be tracked data)."
                )
