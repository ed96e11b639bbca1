"""The local executor's worker processes: a worker that dies stops the run cleanly."""

from __future__ import annotations

import os

from support import process_alive, write_files

PIPELINE = """
import os, pathlib, signal, time
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("w")

def slow() -> Annotated[str, pivot.Out("slow.txt", pivot.loaders.Text())]:
    pathlib.Path("slow.pid.tmp").write_text(str(os.getpid()))
    os.replace("slow.pid.tmp", "slow.pid")  # never seen empty by `fragile`
    time.sleep(60)
    return "finished"

def fragile() -> Annotated[str, pivot.Out("fragile.txt", pivot.loaders.Text())]:
    while not pathlib.Path("slow.pid").exists():  # the other worker runs `slow`
        time.sleep(0.01)
    os.kill(os.getppid(), signal.SIGKILL)  # the worker that forked this stage
    time.sleep(60)
    return "unreachable"

pipeline.register(slow)
pipeline.register(fragile)
"""


def test_a_killed_worker_fails_its_stage_and_stops_the_others(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    result = pivot("run", "-j", "2", rc=1)
    assert "Stage w/fragile" in result.stderr
    assert "the worker process running it died" in result.stderr
    # The other stage was stopped with its worker, not waited for, and nothing recorded.
    assert not process_alive(int((project / "slow.pid").read_text()))
    assert not (project / "slow.txt").exists() and not (project / "fragile.txt").exists()
    assert not list((project / ".pivot" / "stages").glob("**/*.lock"))
    # A second run starts afresh and gets as far again.
    os.unlink(project / "slow.pid")
    again = pivot("run", "-j", "2", rc=1)
    assert "the worker process running it died" in again.stderr
