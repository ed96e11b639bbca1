"""Stages made in a loop by a factory (`for i in ...: pipeline.register(make(i))`): changing
the count of stages runs only the new ones; a changed captured value re-runs its stage only."""

from __future__ import annotations

import pathlib

from support import COUNTER, PivotCLI, executions, write_files

LOOP = (
    """
import pathlib
from typing import Annotated

import pivot
"""
    + COUNTER
    + """

pipeline = pivot.Pipeline("loop")
COUNT = 2
SCALES = {0: 10, 1: 20, 2: 30}


def make(i, scale):
    def stage() -> Annotated[pathlib.Path, pivot.Out(f"out{i}.txt", pivot.loaders.PathOnly())]:
        _count(f"s{i}")
        out = pathlib.Path(f"out{i}.txt")
        out.write_text(str(i * scale))
        return out

    return stage


for i in range(COUNT):
    pipeline.register(make(i, SCALES[i]), name=f"s{i}")
"""
)


def test_adding_a_stage_to_the_loop_runs_only_the_new_one(
    project: pathlib.Path, pivot: PivotCLI
) -> None:
    write_files(project, {"pipeline.py": LOOP})
    pivot("run")
    assert sorted(executions(project)) == ["s0", "s1"]

    write_files(project, {"pipeline.py": LOOP.replace("COUNT = 2", "COUNT = 3")})
    pivot("run")
    assert sorted(executions(project)[2:]) == ["s2"]
    assert (project / "out2.txt").read_text() == "60"

    # A captured value that really changed re-runs that stage only.
    write_files(
        project,
        {"pipeline.py": LOOP.replace("COUNT = 2", "COUNT = 3").replace("1: 20", "1: 21")},
    )
    pivot("run")
    assert executions(project)[3:] == ["s1"]
    assert (project / "out1.txt").read_text() == "21"
