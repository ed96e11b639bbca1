"""Opening a project and selecting the stages a command works on."""

from __future__ import annotations

import pathlib
from typing import NamedTuple

from pivot.cache.workspace import Workspace
from pivot.define.stage import StageSpec
from pivot.discover.finder import Discovery
from pivot.discover.graph import Graph, build_graph, select
from pivot.errors import DefinitionError, PivotError


class Scope(NamedTuple):
    """The graph a command works on, and the stages the user asked for."""

    discovery: Discovery
    graph: Graph
    targets: list[str]


def resolve_scope(
    ws: Workspace, targets: tuple[str, ...], all_pipelines: bool, cwd: pathlib.Path | None = None
) -> Scope:
    """Stages of the current pipeline (or all, or the targets) plus what they need."""
    cwd = (cwd or pathlib.Path.cwd()).resolve()
    discovery = Discovery(ws.project, ws.state)
    current = None
    if all_pipelines:
        roots = [s for p in discovery.load_all() for s in p.stages.values()]
    else:
        file = discovery.nearest_pipeline(cwd)
        if file is None and not targets:
            raise DefinitionError(
                f"No pipeline.py or pivot.yaml in {cwd} or any directory above it up to the "
                f"project root {ws.project.root}. Change into a pipeline directory, name "
                f"stages as <pipeline>/<stage>, or use --all."
            )
        current = discovery.load(file) if file is not None else None
        roots = list(current.stages.values()) if current else []
    chosen = [_find_target(ws, discovery, current, t, cwd) for t in targets]
    graph = build_graph(discovery, chosen or roots)
    if chosen:
        graph = select(graph, [s.id for s in chosen])
    graph.order()
    return Scope(discovery, graph, [s.id for s in chosen] or [s.id for s in roots])


def _find_target(ws: Workspace, discovery: Discovery, current, target: str, cwd) -> StageSpec:
    """A target is a stage name of the current pipeline, a stage id, or an output path."""
    if current is not None and target in current.stages:
        return current.stages[target]
    pipeline_name, _, stage_name = target.partition("/")
    if stage_name:
        for loaded in discovery.pipelines.values():
            if loaded.name == pipeline_name and stage_name in loaded.stages:
                return loaded.stages[stage_name]
    try:
        rel = ws.project.rel(cwd / target)
    except PivotError:
        rel = None
    producer = discovery.find_producer(rel) if rel else None
    if producer is not None:
        return producer
    if stage_name:
        for loaded in discovery.load_all(strict=False):
            if loaded.name == pipeline_name and stage_name in loaded.stages:
                return loaded.stages[stage_name]
        discovery.check_loaded_all()  # the target may be a stage of a pipeline that fails
    known = sorted(current.stages) if current is not None else []
    raise DefinitionError(
        f"Unknown target {target!r}: not a stage of "
        f"{current.file if current else 'the current directory'} "
        f"(stages: {', '.join(known) or 'none'}), not a <pipeline>/<stage> id in the project, "
        f"and not an output path.",
        hint="list-all",
    )
