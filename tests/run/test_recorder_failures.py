"""The group commit when its flush fails (`run/recording.py`), seen from `pivot run`: a
Ctrl-C removes what the interrupted stages wrote even though recording the stages that
finished fails, and a flush that fails while stages still run leaves none of the stages
queued after it half-recorded (no lock file, no run record, no staged blob)."""

from __future__ import annotations

import os
import subprocess
import sys

from support import PYTHONPATH, write_files

# `fast` puts a file where the flush must make the folder of the pipeline's lock files
# (a stage may write anywhere in the project), so recording it fails. `slow` starts
# writing its output folder, waits until `fast` has written its output (so `fast` is
# finished and waiting to be recorded), and presses Ctrl-C for the whole run at once:
# the flush that follows the Ctrl-C is the one that fails.
CTRL_C_WHILE_FAST_WAITS = """
import os, pathlib, signal, time
from typing import Annotated

import pivot
from pivot.define.loaders import PathOnly

pipeline = pivot.Pipeline("p")
ROOT = pathlib.Path(__file__).parent

def fast() -> Annotated[pathlib.Path, pivot.Out("fast.txt", PathOnly())]:
    (ROOT / ".pivot" / "stages" / "p").write_text("in the way")
    (ROOT / "fast.txt").write_text("fast")
    return pathlib.Path("fast.txt")

def slow() -> Annotated[pathlib.Path, pivot.Out("slow", PathOnly())]:
    pathlib.Path("slow").mkdir(exist_ok=True)
    pathlib.Path("slow/half.txt").write_text("half written")
    for _ in range(3000):
        if (ROOT / "fast.txt").exists():
            break
        time.sleep(0.002)
    os.killpg(os.getpgid(0), signal.SIGINT)
    time.sleep(60)
    return pathlib.Path("slow")

pipeline.register(fast)
pipeline.register(slow)
"""


def test_ctrl_c_removes_the_interrupted_stages_outputs_even_if_the_flush_fails(project) -> None:
    write_files(project, {"pipeline.py": CTRL_C_WHILE_FAST_WAITS})
    proc = subprocess.run(
        [sys.executable, "-m", "pivot", "run", "-j", "2"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        timeout=120,
        start_new_session=True,  # the Ctrl-C goes to the run's process group only
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / "slow").exists()  # the interrupted stage's half-written output
    assert not list((project / ".pivot" / "cache" / "tmp").glob("blob.*"))
