"""Rendering the stage graph as text, Graphviz dot or Mermaid."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathlib

    from pivot.discover.graph import Graph


def _by_pipeline(graph: Graph) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for sid in graph.order():
        groups[graph.stages[sid].pipeline].append(sid)
    return groups


def as_json(graph: Graph, root: pathlib.Path) -> str:
    """The graph as JSON (docs/json.md): stages in run order, and one edge per dep path."""
    import json

    order = graph.order()
    stages = [
        {
            "stage": sid,
            "pipeline": graph.stages[sid].pipeline,
            "file": graph.stages[sid].source.relative_to(root).as_posix(),
        }
        for sid in order
    ]
    edges = [
        {"from": up, "to": sid, "path": path}
        for sid in order
        for path, up in sorted(graph.upstream[sid].items())
    ]
    return json.dumps({"stages": stages, "edges": edges}, indent=2)


def text(graph: Graph, root: pathlib.Path) -> str:
    lines = []
    for pipeline, sids in _by_pipeline(graph).items():
        source = graph.stages[sids[0]].source.relative_to(root)
        lines.append(f"{pipeline}  ({source})")
        for sid in sids:
            ups = sorted(set(graph.upstream[sid].values()))
            after = f"  <- {', '.join(ups)}" if ups else ""
            lines.append(f"  {sid}{after}")
    return "\n".join(lines)


def dot(graph: Graph, root: pathlib.Path) -> str:
    lines = ["digraph pivot {", "  rankdir=LR;"]
    for index, (pipeline, sids) in enumerate(_by_pipeline(graph).items()):
        source = graph.stages[sids[0]].source.relative_to(root)
        lines.append(f'  subgraph cluster_{index} {{\n    label="{pipeline} ({source})";')
        lines.extend(f'    "{sid}";' for sid in sids)
        lines.append("  }")
    for sid, ups in graph.upstream.items():
        for path, up in sorted(ups.items()):
            lines.append(f'  "{up}" -> "{sid}" [label="{path}"];')
    lines.append("}")
    return "\n".join(lines)


def mermaid(graph: Graph, root: pathlib.Path) -> str:
    ids = {sid: f"s{i}" for i, sid in enumerate(graph.order())}
    lines = ["flowchart LR"]
    for pipeline, sids in _by_pipeline(graph).items():
        source = graph.stages[sids[0]].source.relative_to(root)
        lines.append(f'  subgraph {ids[sids[0]]}_group ["{pipeline} ({source})"]')
        lines.extend(f'    {ids[sid]}["{sid}"]' for sid in sids)
        lines.append("  end")
    for sid, ups in graph.upstream.items():
        for up in sorted(set(ups.values())):
            lines.append(f"  {ids[up]} --> {ids[sid]}")
    return "\n".join(lines)
