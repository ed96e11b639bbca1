"""`pivot run --watch`: latency from a file write to the affected stage starting, the
watcher's idle CPU, its memory while watching a 100,000-file directory, and how long
Ctrl-C takes. DVC has no watch mode, so there is nothing to compare with.

    python bench/bench_watch.py [--workdir bench/work/watch] [--reps 15] [--files 100000]

Runs the `pivot` of this repository (`python -m pivot` with the repository first on
PYTHONPATH). Latency is the `time` of the watch's `stage_started` event minus the time
just before the test wrote the file (one clock, one machine).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from generate import generate_chain  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
PIVOT = [sys.executable, "-m", "pivot"]

DIR_PIPELINE = """\
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("files")


def count(
    data: Annotated[pathlib.Path, pivot.Dep("data", pivot.loaders.PathOnly())],
) -> Annotated[str, pivot.Out("count.txt", pivot.loaders.Text())]:
    return f"{sum(len(files) for _, _, files in __import__('os').walk(data))}\\n"


pipeline.register(count)
"""


class Watch:
    """A `pivot run --watch --json` process and its events."""

    def __init__(self, cwd: pathlib.Path) -> None:
        self.proc = subprocess.Popen(
            [*PIVOT, "run", "--watch", "--json"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=ENV,
            start_new_session=True,
        )
        self.events: list[dict] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()

    def wait(self, event: str, since: int, stage: str | None = None, timeout=600) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(since, len(self.events)):
                    e = self.events[i]
                    if e["event"] == event and (stage is None or e.get("stage") == stage):
                        return i
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out waiting for {event}: {self.events[-5:]}")
                self.cond.wait(1)

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def cpu_seconds(self) -> float:
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM: the peak) in MB."""
        status = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return tuple(int(values[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))

    def ctrl_c(self) -> float:
        start = time.perf_counter()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=60)
        return time.perf_counter() - start


def fresh(path: pathlib.Path) -> pathlib.Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def init(project: pathlib.Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([*PIVOT, "init"], cwd=project, env=ENV, check=True, capture_output=True)
    subprocess.run([*PIVOT, "run"], cwd=project, env=ENV, check=True, capture_output=True)


def chain_latency(work: pathlib.Path, reps: int) -> dict:
    project = fresh(work / "chain")
    generate_chain(project, "pivot", 200)
    init(project)
    watch = Watch(project)
    watch.wait("idle", 0)
    latencies = []
    for rep in range(reps):
        mark = watch.mark()
        before = time.time()
        (project / "input.txt").write_text(f"{rep + 1}\n")
        started = watch.wait("stage_started", mark, stage="chain/s0")
        latencies.append(watch.events[started]["time"] - before)
        watch.wait("idle", watch.wait("run_finished", started))
    cpu_before = watch.cpu_seconds()
    idle_start = time.perf_counter()
    time.sleep(20)
    idle_cpu = (watch.cpu_seconds() - cpu_before) / (time.perf_counter() - idle_start)
    rss, peak = watch.memory_mb()
    exit_idle = watch.ctrl_c()
    return {
        "latency_ms_median": round(statistics.median(latencies) * 1000, 1),
        "latency_ms_min": round(min(latencies) * 1000, 1),
        "latency_ms_max": round(max(latencies) * 1000, 1),
        "idle_cpu_percent": round(idle_cpu * 100, 2),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "ctrl_c_idle_s": round(exit_idle, 3),
    }


def many_files(work: pathlib.Path, files: int) -> dict:
    project = fresh(work / "files")
    per_folder = 1000
    for i in range(files):
        folder = project / "data" / f"d{i // per_folder:03d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i}.txt").write_text(f"{i}\n")
    (project / "pipeline.py").write_text(DIR_PIPELINE)
    init(project)
    watch = Watch(project)
    watch.wait("idle", 0)
    rss, _ = watch.memory_mb()
    latencies = []
    for rep in range(5):
        mark = watch.mark()
        before = time.time()
        (project / "data" / "d042" / f"new{rep}.txt").write_text("x\n")
        started = watch.wait("stage_started", mark, stage="files/count")
        latencies.append(watch.events[started]["time"] - before)
        watch.wait("idle", watch.wait("run_finished", started))
    cpu_before = watch.cpu_seconds()
    idle_start = time.perf_counter()
    time.sleep(20)
    idle_cpu = (watch.cpu_seconds() - cpu_before) / (time.perf_counter() - idle_start)
    rss_after, peak_after = watch.memory_mb()
    # Ctrl-C while the stage runs (it walks 100,000 files).
    mark = watch.mark()
    (project / "data" / "d001" / "last.txt").write_text("x\n")
    watch.wait("stage_started", mark, stage="files/count")
    exit_running = watch.ctrl_c()
    return {
        "files": files,
        "rss_mb_idle_after_first_run": round(rss, 1),
        "rss_mb_idle_after_reruns": round(rss_after, 1),
        "peak_rss_mb": round(peak_after, 1),
        "latency_ms_median": round(statistics.median(latencies) * 1000, 1),
        "idle_cpu_percent": round(idle_cpu * 100, 2),
        "ctrl_c_running_s": round(exit_running, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(REPO / "bench" / "work" / "watch"))
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--files", type=int, default=100_000, help="0: skip that part")
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    results = {"chain_200": chain_latency(work, args.reps)}
    if args.files:
        results["directory_dep"] = many_files(work, args.files)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
