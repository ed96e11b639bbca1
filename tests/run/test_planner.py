"""The planner called directly on a real project: the decision for each stage (skip,
restore, run, pending) and the reasons `status` prints, as inputs, code, params and
outputs change between runs made with the real CLI."""

from __future__ import annotations

import pathlib

from support import PivotCLI, write_files

from pivot.cache.workspace import open_workspace
from pivot.discover.scope import resolve_scope
from pivot.run.plan import PENDING, RESTORE, RUN, SKIP
from pivot.run.scheduler import plan_graph

PIPELINE = """
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def clean(
    raw: Annotated[str, pivot.Dep("raw.txt", pivot.loaders.Text())], params: dict
) -> Annotated[str, pivot.Out("clean.txt", pivot.loaders.Text())]:
    return raw.upper() * params["times"]


def count(
    text: Annotated[str, pivot.Dep("clean.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("count.txt", pivot.loaders.Text())]:
    return str(len(text))


pipeline.register(clean, params={"times": TIMES})
pipeline.register(count)
"""


def _write(project: pathlib.Path, times: int = 1, body: str = "raw.upper()") -> None:
    text = PIPELINE.replace("TIMES", str(times)).replace("raw.upper()", body)
    write_files(project, {"pipeline.py": text})


def _plan(project: pathlib.Path) -> dict[str, tuple[str, list[str]]]:
    ws = open_workspace(project)
    try:
        scope = resolve_scope(ws, (), False, cwd=project)
        _, decisions = plan_graph(ws, scope.graph, set())
        return {sid: (d.action, d.reasons) for sid, d in decisions.items()}
    finally:
        ws.state.close()


def test_decisions_follow_what_changed(project: pathlib.Path, pivot: PivotCLI):
    _write(project)
    (project / "raw.txt").write_text("abc")
    first = _plan(project)
    assert first["p/clean"][0] == RUN and first["p/count"][0] == PENDING

    pivot("run")
    assert _plan(project) == {"p/clean": (SKIP, []), "p/count": (SKIP, [])}

    (project / "count.txt").unlink()
    assert _plan(project)["p/count"][0] == RESTORE

    (project / "raw.txt").write_text("abcd")
    changed = _plan(project)
    assert changed["p/clean"] == (RUN, ["dep changed: raw.txt"])
    assert changed["p/count"][0] == PENDING

    (project / "raw.txt").write_text("abc")
    _write(project, times=2)
    assert _plan(project)["p/clean"] == (RUN, ["param changed: times 1 → 2"])

    _write(project, times=1, body="raw.lower()")
    assert _plan(project)["p/clean"] == (RUN, ["code changed: func:clean"])

    _write(project)  # back to what ran: the lock matches again
    assert _plan(project)["p/clean"] == (SKIP, [])


def test_planning_writes_nothing_and_a_restore_keeps_the_remote_run_record(
    tmp_path, project, pivot
):
    _write(project)
    (project / "raw.txt").write_text("abc")
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("run")
    pivot("push")

    other = tmp_path / "other"  # a clone without lock files: only the remote knows the runs
    other.mkdir()
    for name in ("pipeline.py", "raw.txt"):
        (other / name).write_bytes((project / name).read_bytes())
    cli = PivotCLI(other)
    cli("init")
    cli("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    runs = other / ".pivot" / "cache" / "runs"

    dry = cli("run", "--dry-run")
    assert "restore" in dry.stdout and "p/clean" in dry.stdout, dry.stdout
    assert not runs.exists() or not any(runs.rglob("*")), "planning stored a run record"

    cli("run")
    assert (other / "count.txt").read_text() == "3"
    assert len([p for p in runs.rglob("*") if p.is_file()]) == 2  # both records kept
