"""The group commit's flush on its own thread while stages run (`run/recording.py`)."""

from __future__ import annotations

from support import process_alive, write_files

# `slow` waits for `fast`'s lock file: it appears only if `fast` is recorded while `slow`
# still runs.
WAITS_FOR_THE_LOCK = """
import pathlib, time
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def fast() -> Annotated[str, pivot.Out("fast.txt", pivot.loaders.Text())]:
    return "fast"

def slow(
    text: Annotated[str, pivot.Dep("fast.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("slow.txt", pivot.loaders.Text())]:
    lock = pathlib.Path(__file__).parent / ".pivot" / "stages" / "p" / "fast.lock"
    for _ in range(600):
        if lock.exists():
            return "recorded while slow ran"
        time.sleep(0.1)
    return "not recorded"

pipeline.register(fast)
pipeline.register(slow)
"""


def test_a_finished_stage_is_recorded_while_the_next_one_runs(project, pivot) -> None:
    write_files(project, {"pipeline.py": WAITS_FOR_THE_LOCK})
    result = pivot("run", "-j", "1")
    assert "2 ran" in result.stdout
    assert (project / "slow.txt").read_text() == "recorded while slow ran"
    assert "Every stage is up to date" in pivot("run").stdout


# `fast` puts a file where the flush must make the folder of the pipeline's lock files, so
# recording it fails while `slow` runs (a stage may write anywhere in the project).
BREAKS_THE_FLUSH = """
import os, pathlib, time
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def fast() -> Annotated[str, pivot.Out("fast.txt", pivot.loaders.Text())]:
    (pathlib.Path(__file__).parent / ".pivot" / "stages" / "p").write_text("in the way")
    return "fast"

def slow(
    text: Annotated[str, pivot.Dep("fast.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("slow.txt", pivot.loaders.Text())]:
    pathlib.Path("slow.pid").write_text(str(os.getpid()))
    time.sleep(600)
    return text

pipeline.register(fast)
pipeline.register(slow)
"""


def test_a_failed_flush_stops_the_run_without_waiting_for_the_running_stage(project, pivot) -> None:
    write_files(project, {"pipeline.py": BREAKS_THE_FLUSH})
    result = pivot("run", "-j", "1", rc=None)  # PivotCLI's timeout: the run must not wait
    assert result.returncode != 0
    assert ".pivot/stages/p" in result.stderr
    assert not (project / "slow.txt").exists()
    if (project / "slow.pid").exists():  # it had started: it was stopped
        assert not process_alive(int((project / "slow.pid").read_text()))
