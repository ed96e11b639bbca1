"""A stage whose dep is missing (neither tracked nor produced) is a failure like any
other: without --keep-going nothing else starts after it; the error names the path and
suggests tracking it."""

from __future__ import annotations

import json

from support import COUNTER, executions, write_files

PIPELINE = (
    """
from typing import Annotated

import pivot
"""
    + COUNTER
    + """
pipeline = pivot.Pipeline("p")


def needs_raw(
    x: Annotated[str, pivot.Dep("data/raw.csv", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("prepared.txt", pivot.loaders.Text())]:
    _count("needs_raw")
    return x


def after(
    x: Annotated[str, pivot.Dep("prepared.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("after.txt", pivot.loaders.Text())]:
    _count("after")
    return x


def unrelated() -> Annotated[str, pivot.Out("unrelated.txt", pivot.loaders.Text())]:
    _count("unrelated")
    return "u"


pipeline.register(needs_raw)
pipeline.register(after)
pipeline.register(unrelated)
"""
)


def test_without_keep_going_nothing_starts_after_the_missing_dep(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    proc = pivot("run", "-j", "1", rc=1)
    assert executions(project) == []
    assert not (project / "unrelated.txt").exists()
    assert not (project / ".pivot/stages/p/unrelated.lock").exists()
    error = proc.stderr.splitlines()[-1]
    assert error.startswith("Error: ") and "Traceback" not in proc.stderr
    assert "p/needs_raw" in proc.stderr and "data/raw.csv" in proc.stderr
    assert "`pivot track data/raw.csv`" in proc.stderr


def test_keep_going_runs_the_unrelated_stage_and_blocks_the_downstream(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    proc = pivot("run", "-j", "1", "--keep-going", rc=1)
    assert executions(project) == ["unrelated"]
    assert (project / "unrelated.txt").read_text() == "u"
    assert "blocked" in proc.stdout and "p/after" in proc.stdout
    assert "`pivot track data/raw.csv`" in proc.stderr


def test_status_reason_is_the_plan_s_and_the_advice_the_cli_s(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    rows = {row["stage"]: row for row in json.loads(pivot("status", "--json").stdout)}
    needs = rows["p/needs_raw"]
    assert needs["reasons"] == ["dep data/raw.csv is missing (not tracked, no stage produces it)"]
    assert needs["missing"] == ["data/raw.csv"]
    assert "missing" not in rows["p/unrelated"]
    shown = pivot("status").stdout
    assert "(raw data? `pivot track data/raw.csv` where it exists, then commit the record)" in (
        shown
    )


def test_a_dep_missing_inside_a_tracked_folder_names_the_folder(project, pivot) -> None:
    """The folder is tracked (its record lacks the file): the advice is to put the folder
    back or track it again, not to track the missing file on its own."""
    write_files(project, {"pipeline.py": PIPELINE, "data/other.csv": "o\n"})
    pivot("track", "data")
    proc = pivot("run", "-j", "1", rc=1)
    assert executions(project) == []
    assert "p/needs_raw" in proc.stderr and "data/raw.csv" in proc.stderr
    assert "the tracked folder data" in proc.stderr
    assert "`pivot checkout data`" in proc.stderr and "`pivot track data`" in proc.stderr
    assert "`pivot track data/raw.csv`" not in proc.stderr
