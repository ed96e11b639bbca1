"""The local executor's spare child, prepared for the stage expected next while the stage
before it runs: it writes nothing for a stage that then does not run, and a stage other
than the expected one runs in it in full."""

from __future__ import annotations

import json

from support import write_files

PIPELINE = """
import os, pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def first() -> Annotated[str, pivot.Out("first.txt", pivot.loaders.Text())]:
    if os.environ.get("FAIL_FIRST"):
        raise RuntimeError("first fails")
    return "first\\n"

def left(
    text: Annotated[str, pivot.Dep("first.txt", pivot.loaders.Text())],
) -> Annotated[dict, pivot.Out("made/left/left.json", pivot.loaders.JSON())]:
    return {"left": text.strip(), "pid": os.getpid()}

def right(
    text: Annotated[str, pivot.Dep("first.txt", pivot.loaders.Text())],
) -> Annotated[dict, pivot.Out("made/right/right.json", pivot.loaders.JSON())]:
    return {"right": text.strip(), "pid": os.getpid()}

pipeline.register(first)
pipeline.register(left)
pipeline.register(right)
"""


def test_stages_after_one_run_in_full_whichever_comes_next(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run", "-j", "1")
    left = json.loads((project / "made/left/left.json").read_text())
    right = json.loads((project / "made/right/right.json").read_text())
    assert left["left"] == "first" and right["right"] == "first"
    assert left["pid"] != right["pid"]  # each stage in a process of its own
    assert "up to date" in pivot("status").stdout.lower()


def test_a_stage_prepared_for_but_blocked_writes_nothing(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    result = pivot("run", "-j", "1", rc=1, FAIL_FIRST="1")
    assert "first fails" in result.stderr
    # The downstream stages were prepared for while `first` ran, then blocked: not even
    # the folders of their outputs were made.
    assert not (project / "made").exists()
    assert not (project / "first.txt").exists()
