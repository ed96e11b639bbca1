"""A stage reading a file of a tracked folder whose record no longer holds that file:
the dep is missing, never "up to date" on the hash its lock recorded."""

from __future__ import annotations

import json

from support import write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def clean(
    raw: Annotated[str, pivot.Dep("data/in/raw.csv", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("clean.txt", pivot.loaders.Text())]:
    return raw.upper()


pipeline.register(clean)
"""


def test_a_dep_the_tracked_folder_no_longer_holds_is_missing_for_status_and_run(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "data/in/raw.csv": "x\n", "data/in/o.csv": "y"})
    pivot("track", "data/in")
    pivot("run")
    (project / "data/in/raw.csv").unlink()
    pivot("track", "data/in")  # the folder tracked again without the file

    rows = json.loads(pivot("status", "--json").stdout)
    row = next(r for r in rows if r.get("stage") == "p/clean")
    assert row["action"] == "run"
    assert row["missing"] == ["data/in/raw.csv"]
    assert row["reasons"] == [
        "dep data/in/raw.csv is missing (the tracked folder data/in does not hold it)"
    ]
    text = pivot("status").stdout
    assert "data/in/raw.csv" in text and "Every stage is up to date" not in text

    failed = pivot("run", rc=1)
    assert "p/clean" in failed.stderr and "data/in/raw.csv" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (project / "clean.txt").read_text() == "X\n"  # the old output left as it was
