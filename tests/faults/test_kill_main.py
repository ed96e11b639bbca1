"""kill -9 of the main `pivot run`: its workers and stage processes die with it, and the
next command is not blocked by a lock whose holder is dead."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

from support import PYTHONPATH, PivotCLI, process_alive, start_pivot, write_files

PIPELINE = """
import os
import pathlib
import time
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def slow() -> Annotated[str, pivot.Out("slow.txt", pivot.loaders.Text())]:
    pathlib.Path("stage.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60  # bounded, so that a failing test leaves nothing behind
    while pathlib.Path("hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "done"


pipeline.register(slow)
"""


def _wait_for(predicate, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def _parent(pid: int) -> int:
    return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_workers_and_stages_die_with_a_killed_run(project: pathlib.Path, pivot: PivotCLI):
    write_files(project, {"pipeline.py": PIPELINE, "hold": "1"})
    main = start_pivot(project, "run", output=subprocess.DEVNULL)
    pid_file = project / "stage.pid"
    _wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the stage to start")
    stage = int(pid_file.read_text())
    worker = _parent(stage)
    assert worker != main.pid and process_alive(worker)

    main.send_signal(signal.SIGKILL)
    main.wait(timeout=30)
    _wait_for(
        lambda: not process_alive(stage) and not process_alive(worker), "the orphans to die", 10
    )

    (project / "hold").unlink()
    rerun = pivot("run")
    assert "ran       p/slow" in rerun.stdout, rerun.stdout
    assert (project / "slow.txt").read_text() == "done"


HOLDER = """
import os, sys, time
sys.path.insert(0, {pythonpath!r})
from pivot.project import Project

with Project(__import__("pathlib").Path({root!r})).exclusive("run"):
    if os.fork() == 0:  # a process that outlives the lock holder, as a stage's daemon may
        time.sleep(60)
        os._exit(0)
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_lock_whose_holder_died_does_not_block(project: pathlib.Path, pivot: PivotCLI):
    write_files(project, {"pipeline.py": PIPELINE})
    script = HOLDER.format(pythonpath=PYTHONPATH, root=str(project))
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = pivot("run", rc=1)
        assert busy.stderr == (
            f"Error: `pivot run` (pid {holder.pid}) is running in {project} right now; `pivot "
            f"run` would race with it. Wait for it to finish and try again.\n"
        )

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        rerun = pivot("run")  # the holder's forked child still runs
        assert "ran       p/slow" in rerun.stdout, rerun.stdout
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
