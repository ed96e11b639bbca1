"""The stage DAG: built from artifact paths, ordered topologically, cycles reported."""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING

from pivot.cache import tracked
from pivot.define.stage import GLOB, MATCH, Artifact
from pivot.errors import DefinitionError

if TYPE_CHECKING:
    from pivot.cache.tracked import Tracked
    from pivot.define.stage import StageSpec
    from pivot.discover.finder import Discovery


class Graph:
    """Stages by id, with upstream edges keyed by the dep path that links them."""

    __slots__ = ("_ordered", "absent", "stages", "upstream")

    def __init__(
        self,
        stages: dict[str, StageSpec] | None = None,
        upstream: dict[str, dict[str, str]] | None = None,
        absent: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.stages = {} if stages is None else stages
        self.upstream = {} if upstream is None else upstream
        # Deps that exist nowhere (not on disk, not produced, not tracked), by stage: the
        # message a stage that must execute fails with.
        self.absent = {} if absent is None else absent
        # The last order computed, with the stage ids and edges it was computed from: a
        # run asks for the order several times, and the graph is not changed meanwhile.
        self._ordered: tuple[list[str], dict[str, dict[str, str]], list[str]] | None = None

    def downstream(self) -> dict[str, list[str]]:
        down: dict[str, list[str]] = {sid: [] for sid in self.stages}
        for sid, ups in self.upstream.items():
            for up in dict.fromkeys(ups.values()):
                down[up].append(sid)
        return down

    def order(self) -> list[str]:
        """Topological order, stable: stages keep the order they were added in."""
        memo = self._ordered
        if memo is not None and memo[1] == self.upstream and memo[0] == list(self.stages):
            return list(memo[2])
        ordered = self._order()
        self._ordered = (
            list(self.stages),
            {sid: dict(ups) for sid, ups in self.upstream.items()},
            list(ordered),
        )
        return ordered

    def _order(self) -> list[str]:
        pending = {sid: set(ups.values()) for sid, ups in self.upstream.items()}
        down = self.downstream()
        ready = deque(sid for sid in self.stages if not pending[sid])
        ordered: list[str] = []
        while ready:
            sid = ready.popleft()
            ordered.append(sid)
            for child in down[sid]:
                pending[child].discard(sid)
                if not pending[child]:
                    ready.append(child)
        if len(ordered) != len(self.stages):
            raise DefinitionError(_describe_cycle(self, pending))
        return ordered


def build_graph(discovery: Discovery, roots: list[StageSpec]) -> Graph:
    """The roots plus every stage they need, found through their dep paths."""
    graph = Graph()
    records: dict[str, Tracked] | None = None
    queue = deque(roots)
    for stage in roots:
        graph.stages[stage.id] = stage
    while queue:
        stage = queue.popleft()
        links: dict[str, str] = {}
        if any(dep.group == GLOB for dep in stage.deps):
            stage.deps = expand_globs(discovery, stage)
        for dep in stage.deps:
            producer = discovery.find_producer(dep.path)
            inner = discovery.outputs_inside(dep.path) if producer is None else []
            if inner:
                out, writer = inner[0]
                raise DefinitionError(
                    f"Stage {stage.id} ({stage.source}) depends on the directory {dep.path}, "
                    f"which holds {out}, an output of {writer.id} ({writer.source}). Depend "
                    f"on the output paths themselves so that the order is known (a list of "
                    f"paths, or a pattern such as '{dep.declared}/*', reads several)."
                )
            if producer is None and not os.path.lexists(discovery.project.root / dep.path):
                if records is None:
                    records = tracked.load_all(discovery.project)
                if tracked.covering(records, dep.path) is not None:
                    continue
                producer = discovery.find_producer_rescanning(dep.path)
                if producer is None:
                    message = _missing_dep(discovery, stage, dep.path, dep.declared)
                    graph.absent.setdefault(stage.id, {})[dep.path] = message
            if producer is None:
                continue
            if producer.id == stage.id:
                raise DefinitionError(
                    f"Stage {stage.id} ({stage.source}) reads {dep.path}, which it also writes. "
                    f"A stage cannot depend on its own output."
                )
            links[dep.path] = producer.id
            if producer.id not in graph.stages:
                graph.stages[producer.id] = producer
                queue.append(producer)
        graph.upstream[stage.id] = links
    return graph


def expand_globs(discovery: Discovery, stage: StageSpec) -> list[Artifact]:
    """The stage's deps with each glob replaced by the outputs of the project it matches,
    sorted by path (the scan is redone once if it matches none)."""
    deps: list[Artifact] = []
    for dep in stage.deps:
        if dep.group != GLOB:
            deps.append(dep)
            continue
        matched = discovery.outputs_matching(dep.path)
        if not matched:
            raise DefinitionError(
                f"Stage {stage.id} ({stage.source}) depends on {dep.declared!r} ({dep.path} in "
                f"the project), a pattern that matches no output of any stage in the "
                f"project. Fix the pattern, or add the stages that write such outputs."
            )
        base = stage.workdir
        root = discovery.project.root
        for path in matched:
            declared = os.path.relpath(root / path, base).replace(os.sep, "/")
            deps.append(Artifact(dep.key, declared, path, dep.loader, MATCH))
    return deps


def select(graph: Graph, targets: list[str]) -> Graph:
    """The sub-graph of `targets` (stage ids) and everything upstream of them."""
    keep: set[str] = set()
    stack = list(targets)
    while stack:
        sid = stack.pop()
        if sid not in keep:
            keep.add(sid)
            stack.extend(graph.upstream[sid].values())
    return Graph(
        {sid: s for sid, s in graph.stages.items() if sid in keep},
        {sid: ups for sid, ups in graph.upstream.items() if sid in keep},
        {sid: paths for sid, paths in graph.absent.items() if sid in keep},
    )


def _missing_dep(discovery: Discovery, stage: StageSpec, path: str, declared: str) -> str:
    searched = sorted(str(discovery.project.root / p) for p in discovery.scan())
    if discovery.broken:
        return (
            f"Stage {stage.id} ({stage.source}) depends on {declared!r} ({path} in the "
            f"project), which does not exist and which no loaded stage produces; a pipeline "
            f"that does not load may produce it: {' '.join(discovery.broken.values())}"
        )
    return (
        f"Stage {stage.id} ({stage.source}) depends on {declared!r} ({path} in the project), "
        f"which does not exist and which no stage produces. Searched the pipelines "
        f"{', '.join(searched) or '(none)'} from {path} upward and across the project root "
        f"{discovery.project.root}, and it is not tracked data. Create the file, fix the "
        f"path, or add the stage that writes it."
    )


def _describe_cycle(graph: Graph, pending: dict[str, set[str]]) -> str:
    stuck = {sid for sid, ups in pending.items() if ups}
    start = min(stuck)
    path = [start]
    seen = {start}
    current = start
    while True:
        current = min(u for u in graph.upstream[current].values() if u in stuck)
        if current in seen:
            cycle = [*path[path.index(current) :], current]
            break
        seen.add(current)
        path.append(current)
    steps = [f"{sid} ({graph.stages[sid].source})" for sid in reversed(cycle)]
    return (
        f"The stages form a cycle: {' -> '.join(steps)}. Each arrow is an output read by "
        f"the next stage; break the cycle by changing one of those paths."
    )
