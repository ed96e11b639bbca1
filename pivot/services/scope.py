"""What a command works on: the stages in scope, and their lock files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pivot.cache.workspace import open_workspace
from pivot.discover.scope import Scope, resolve_scope
from pivot.run.lockfile import declared_locks

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.define.stage import StageSpec
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


def locks_in_scope(ws: Workspace, targets: tuple[str, ...], all_pipelines: bool) -> list[Lock]:
    """The lock files of this pipeline and its upstreams, or of TARGETS; `--all` alone:
    of every stage of every pipeline, found without building the graph, so that a clone
    lacking a raw input still gets the outputs made from it."""
    if all_pipelines and not targets:
        return declared_locks(ws.project, every_stage(ws), every=True)
    return scope_locks(ws.project, resolve_scope(ws, targets, all_pipelines))


def every_stage(ws: Workspace) -> list[StageSpec]:
    """Every stage of every pipeline under the project root, pipeline by pipeline."""
    from pivot.discover.finder import Discovery

    return [s for p in Discovery(ws.project, ws.state).load_all() for s in p.stages.values()]


def command_locks(targets: tuple[str, ...], all_pipelines: bool) -> tuple[Project, list[Lock]]:
    """The project and the lock files a transfer command works on (`locks_in_scope`)."""
    ws = open_workspace()
    try:
        return ws.project, locks_in_scope(ws, targets, all_pipelines)
    finally:
        ws.state.close()
