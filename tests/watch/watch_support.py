"""Driving a real `pivot run --watch --json` process: its events as they arrive, waiting
for one with a deadline, Ctrl-C to its process group, and what is left of that group."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from support import PYTHONPATH

DEADLINE = 30.0  # seconds: generous, the machine may be loaded; nothing here is timed


class Watching:
    """`python -m pivot run --watch --json ARGS` in its own process group."""

    def __init__(self, cwd: pathlib.Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pivot", "run", "--watch", "--json", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # On a missed deadline, SIGABRT makes it print every thread's stack.
            env={**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONFAULTHANDLER": "1"},
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        self.events: list[dict] = []
        self.stderr = ""
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.stderr += line

    def mark(self) -> int:
        """The number of events so far: `wait_for(..., since=mark)` looks after it."""
        with self._cond:
            return len(self.events)

    def wait_for(self, match: Callable[[dict], bool], since: int = 0) -> int:
        """The index of the first event from `since` on that `match`es; fails at the
        deadline or if the process ended first."""
        deadline = time.monotonic() + DEADLINE
        with self._cond:
            while True:
                for index in range(since, len(self.events)):
                    if match(self.events[index]):
                        return index
                if self.proc.poll() is not None and not self._readers[0].is_alive():
                    raise AssertionError(f"pivot exited {self.proc.returncode}: {self.report()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    self._cond.release()
                    try:
                        self._dump_stacks()
                    finally:
                        self._cond.acquire()
                    raise AssertionError(f"no such event: {self.report()}")
                self._cond.wait(min(left, 0.5))

    def _dump_stacks(self) -> None:
        """SIGABRT: Python's fault handler prints the stacks on stderr (read by then)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGABRT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._readers[1].join(timeout=5)

    def finished_run(self, since: int = 0) -> int:
        return self.wait_for(lambda e: e["event"] == "run_finished", since)

    def between(self, start: int, end: int, event: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events[start : end + 1] if e["event"] == event]

    def started(self, start: int, end: int) -> list[str]:
        return [e["stage"] for e in self.between(start, end, "stage_started")]

    def report(self) -> str:
        with self._cond:
            lines = "\n".join(json.dumps(e) for e in self.events)
            return f"\n--- events\n{lines}\n--- stderr\n{self.stderr}"

    def stop(self) -> int:
        """Ctrl-C once the last run is over and the watch waits: the exit code."""
        with self._cond:
            ends = [i for i, e in enumerate(self.events) if e["event"] == "run_finished"]
        self.wait_for(lambda e: e["event"] == "idle", ends[-1] if ends else 0)
        return self.interrupt()

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it (to the whole process group); the exit code."""
        os.killpg(self.pgid, signal.SIGINT)
        return self.proc.wait(timeout=DEADLINE)

    def close(self) -> None:
        """Kill whatever is left (a test that failed half-way)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def group_members(pgid: int) -> list[str]:
    """The processes (pid and command) of process group `pgid`, zombies included."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry} {fields[0]} {command}")
    return found


def wait_until_gone(pgid: int) -> list[str]:
    """The members of the group still there at the deadline (none, normally at once)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        left = group_members(pgid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def edit(path: pathlib.Path, text: str) -> None:
    """Replace a file's content as an editor saving in place does."""
    path.write_text(text)


def wait_for_file(path: pathlib.Path) -> bool:
    """Whether `path` exists before the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
