"""A `pivot run` stopped while a stage runs a process of its own (Ctrl-C, SIGTERM or kill -9
of pivot alone, not of its process group): no process pivot started, nor any the stage
started, is left running."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from support import PYTHONPATH, write_files

PIPELINE = """
import os
import pathlib
import subprocess
import time
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def slow() -> Annotated[str, pivot.Out("slow.txt", pivot.loaders.Text())]:
    child = subprocess.Popen(["sleep", "300"])
    shell = subprocess.Popen(["sh", "-c", "sleep 300 & wait"])
    pathlib.Path("started").write_text(f"{child.pid} {shell.pid}")
    time.sleep(300)
    return "done"


pipeline.register(slow)
"""


def _stat(pid: int) -> list[str] | None:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _descendants(root: int) -> dict[int, str]:
    """Every process below `root`, with its start time (so a reused pid is not taken for it)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents[int(entry)] = (int(fields[1]), fields[19])
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def _running(pid: int, started: str) -> bool:
    """Whether that process still runs (a zombie, dead but not yet collected, does not)."""
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


def _wait_for(predicate, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)],
)
def test_no_process_outlives_a_stopped_run(project: pathlib.Path, sig: int, code: int) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    main = subprocess.Popen(
        [sys.executable, "-m", "pivot", "run"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = project / "started"
    processes: dict[int, str] = {}
    try:
        _wait_for(lambda: started.exists() and started.read_text(), "the stage to start")
        own = [int(p) for p in started.read_text().split()]
        # Both of the stage's processes, and the shell's own child, are below pivot.
        _wait_for(lambda: len(_descendants(main.pid).keys() - set(own)) >= 3, "the processes")
        processes = _descendants(main.pid)
        assert set(own) <= processes.keys()

        main.send_signal(sig)
        assert main.wait(timeout=30) == code
        # Well before the stage's processes would end by themselves (300 s).
        _wait_for(
            lambda: not any(_running(p, s) for p, s in processes.items()),
            "every process to end",
            30,
        )
        assert not (project / "slow.txt").exists()
    finally:
        main.kill()
        for pid, start in processes.items():
            if _running(pid, start):
                os.kill(pid, signal.SIGKILL)
