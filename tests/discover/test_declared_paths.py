"""Shortcuts of loading many stages give what the full computation gives: a declared
path's project path is the one `Project.rel` gives (or both refuse it), whatever the path;
the kept topological order of a graph is its order, also after the graph changed."""

from __future__ import annotations

import pathlib
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pivot.discover.graph import Graph
from pivot.discover.loading import DeclaredPaths
from pivot.errors import PivotError
from pivot.project import Project

ROOT = pathlib.Path("/proj")
PARTS = st.one_of(
    st.text(alphabet="aZ09_-.~* ", max_size=5),
    st.sampled_from(["..", ".", "", "data", "x.", "a..b", "-x", "_"]),
)


def _verdict(func, declared: str) -> str:
    try:
        return func(declared)
    except PivotError:
        return "refused"


@settings(max_examples=400)
@given(
    st.sampled_from(["", "p", "p/q", "a.b/c-d"]),
    st.lists(PARTS, min_size=1, max_size=4).map("/".join),
)
def test_the_shortcut_gives_what_project_rel_gives(folder: str, declared: str) -> None:
    project = Project(ROOT)
    directory = ROOT / folder if folder else ROOT
    file_rel = f"{folder}/pipeline.py" if folder else "pipeline.py"
    paths = DeclaredPaths(project, directory, f"{folder}/" if folder else "", file_rel)
    expected = _verdict(lambda d: project.rel(d, base=directory), declared)
    assert _verdict(paths.rel, declared) == expected


def test_the_order_of_a_changed_graph_is_computed_again() -> None:
    """A run asks for the topological order several times (it is kept); a graph changed
    in between (a stage added, an edge moved, a cycle made) gets its new order."""
    graph = Graph()
    for sid in ("p/c", "p/b", "p/a"):
        graph.stages[sid] = SimpleNamespace(source="pipeline.py")  # type: ignore[assignment]
        graph.upstream[sid] = {}
    graph.upstream["p/c"] = {"b.txt": "p/b"}
    graph.upstream["p/b"] = {"a.txt": "p/a"}
    assert graph.order() == ["p/a", "p/b", "p/c"]
    graph.order().clear()  # the caller's copy
    assert graph.order() == ["p/a", "p/b", "p/c"]
    graph.upstream["p/b"] = {}
    graph.upstream["p/a"] = {"c.txt": "p/c"}
    assert graph.order() == ["p/b", "p/c", "p/a"]
    graph.stages["p/d"] = SimpleNamespace(source="pipeline.py")  # type: ignore[assignment]
    graph.upstream["p/d"] = {}
    assert graph.order() == ["p/b", "p/d", "p/c", "p/a"]
    graph.upstream["p/b"]["a.txt"] = "p/a"
    with pytest.raises(PivotError, match="cycle"):
        graph.order()
