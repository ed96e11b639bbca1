"""The graph and discovery, called directly on real project files: producers found by
walking up and by the project scan, topological order, selection, and the errors a user
sees for a cycle, a missing dep and a dep on a folder of outputs."""

from __future__ import annotations

import pathlib

import pytest
from support import write_files

from pivot.cache.workspace import open_workspace
from pivot.discover.graph import select
from pivot.discover.scope import resolve_scope
from pivot.errors import PivotError

HEADER = """
import pathlib
from typing import Annotated

import pivot

P = pivot.loaders.PathOnly()
"""


def _stage(name: str, dep: str | None, out: str) -> str:
    arg = f'x: Annotated[pathlib.Path, pivot.Dep("{dep}", P)]' if dep else ""
    return f"""
def {name}({arg}) -> Annotated[pathlib.Path, pivot.Out("{out}", P)]:
    pathlib.Path("{out}").write_text("{name}")
    return pathlib.Path("{out}")
pipeline.register({name})
"""


def _scope(root: pathlib.Path, cwd: pathlib.Path, *targets: str, all_pipelines: bool = False):
    ws = open_workspace(root)
    try:
        return resolve_scope(ws, targets, all_pipelines, cwd=cwd)
    finally:
        ws.state.close()


def test_order_follows_paths_across_pipelines_and_keeps_registration_order(project):
    write_files(
        project,
        {
            "raw.txt": "r",
            "prep/pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("prep")\n'
            + _stage("clean", "../raw.txt", "clean.txt")
            + _stage("side", None, "side.txt"),
            "prep/model/pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("model")\n'
            + _stage("train", "../clean.txt", "model.txt")
            + _stage("report", "model.txt", "report.txt"),
        },
    )
    scope = _scope(project, project / "prep" / "model")
    assert scope.graph.order() == ["prep/clean", "model/train", "model/report"]
    # only the producer stage joins the graph, never its whole pipeline
    assert set(scope.graph.stages) == {"prep/clean", "model/train", "model/report"}
    assert scope.graph.upstream["model/train"] == {"prep/clean.txt": "prep/clean"}
    assert scope.targets == ["model/train", "model/report"]


def test_a_producer_outside_the_ancestors_is_found_by_the_scan(project):
    write_files(
        project,
        {
            "a/pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("a")\n'
            + _stage("make", None, "out.txt"),
            "b/pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("b")\n'
            + _stage("use", "../a/out.txt", "use.txt"),
        },
    )
    scope = _scope(project, project / "b")
    assert scope.graph.order() == ["a/make", "b/use"]


def test_select_keeps_targets_and_their_upstreams_only(project):
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("p")\n'
            + _stage("one", None, "1.txt")
            + _stage("two", "1.txt", "2.txt")
            + _stage("three", "2.txt", "3.txt")
            + _stage("other", None, "o.txt"),
        },
    )
    graph = _scope(project, project).graph
    assert graph.order() == ["p/one", "p/other", "p/two", "p/three"]
    picked = select(graph, ["p/two"])
    assert picked.order() == ["p/one", "p/two"]


def test_a_cycle_is_reported_as_the_chain_of_stages(project):
    write_files(
        project,
        {
            "seed.txt": "s",
            "pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("p")\n'
            + _stage("a", "c.txt", "a.txt")
            + _stage("b", "a.txt", "b.txt")
            + _stage("c", "b.txt", "c.txt"),
        },
    )
    with pytest.raises(PivotError) as caught:
        _scope(project, project)
    source = project / "pipeline.py"
    assert str(caught.value) == (
        f"The stages form a cycle: p/a ({source}) -> p/b ({source}) -> p/c ({source}) -> "
        f"p/a ({source}). Each arrow is an output read by the next stage; break the cycle by "
        f"changing one of those paths."
    )


def test_a_missing_dep_names_the_stage_the_path_and_where_it_looked(project):
    write_files(
        project,
        {
            "sub/pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("s")\n'
            + _stage("use", "nothing.txt", "o.txt")
        },
    )
    # Only a stage that must execute fails on it (pull, fetch, status work from lock files):
    # the graph keeps the message for that stage.
    scope = _scope(project, project / "sub")
    message = scope.graph.absent["s/use"]["sub/nothing.txt"]
    assert message.startswith(
        f"Stage s/use ({project / 'sub' / 'pipeline.py'}) depends on 'nothing.txt' "
        f"(sub/nothing.txt in the project), which does not exist and which no stage produces."
    )
    assert str(project / "sub") in message and "Create the file, fix the path" in message


def test_a_dep_on_a_folder_holding_outputs_is_refused(project):
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + 'pipeline = pivot.Pipeline("p")\n'
            + _stage("make", None, "data/x.txt")
            + _stage("use", "data", "u.txt"),
        },
    )
    with pytest.raises(PivotError) as caught:
        _scope(project, project)
    assert "depends on the directory data, which holds data/x.txt, an output of p/make" in str(
        caught.value
    )
