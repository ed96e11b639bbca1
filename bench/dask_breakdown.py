"""Where the CPU and the wall time of one Dask run go, process by process.

    .venv/bin/python bench/dask_breakdown.py [--scenario indep|chain] [--repeat N]
        [--cluster-env NAME=VALUE]...

Starts the same loopback cluster and SeaweedFS as `dask_bench.py`, runs the scenario's
first `pivot run --executor dask` (a fresh project each repeat) while sampling
`/proc/PID/stat` of every process involved, and prints: the CPU seconds of the
coordinator (`pivot run`, its whole tree), the Dask scheduler, each nanny, each worker
process, each worker's stage server and the stage processes it forked, and SeaweedFS;
then the timeline from the workers' `tasks.log` (when each worker's first task started
after `pivot run` began, the gaps between its tasks, the tail after the last one).
"""

from __future__ import annotations

import argparse
import itertools
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dask_bench import CHAIN, INDEP, Cluster, make_project, pivot_env  # noqa: E402
from s3server import SeaweedFS  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, float, float] | None:
    """(parent pid, session, own CPU, CPU of waited children) of a process."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / TICK
    kids = (int(fields[13]) + int(fields[14])) / TICK
    return int(fields[1]), int(fields[3]), own, kids


def _cmdline(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Sampler:
    """The latest CPU figures of every process in `sessions`, read every 0.1 s."""

    def __init__(self, sessions: set[int]) -> None:
        self.sessions = sessions
        self.seen: dict[int, tuple[int, int, float, float, str]] = {}
        self.series: list[tuple[float, dict[int, float]]] = []
        self._stop = threading.Event()
        self.snapshot()
        self.base = dict(self.seen)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def snapshot(self) -> None:
        now = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                found = _stat(int(name))
                if found and found[1] in self.sessions:
                    pid = int(name)
                    old = self.seen.get(pid)
                    cmd = old[4] if old else _cmdline(pid)
                    self.seen[pid] = (*found, cmd)
                    now[pid] = found[2]
        self.series.append((time.time(), now))

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.snapshot()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.snapshot()


def role(pid: int, seen: dict, workers: dict[int, str]) -> str:
    parent, session, _, _, cmd = seen[pid]
    who = workers.get(session, "")
    if "dask_scheduler" in cmd:
        return "dask scheduler"
    if "dask_worker" in cmd:
        return f"{who} nanny (dask worker CLI)"
    if "pivot.run.stage_process" in cmd:
        grand = seen.get(parent, (0, 0, 0, 0, ""))[4]
        return f"{who} stage process" if "stage_process" in grand else f"{who} stage server"
    if "multiprocessing" in cmd and "resource_tracker" in cmd:
        return f"{who} resource tracker"
    if "multiprocessing" in cmd or "forkserver" in cmd:
        return f"{who} worker process"
    if "weed" in cmd:
        return "SeaweedFS"
    return f"{who} other: {cmd[:60]}"


def one_run(work: pathlib.Path, cluster: Cluster, server: SeaweedFS, source: str, n: int):
    root = work / f"run{n}"
    make_project(root, source, server, "pivot-dask-bench")
    before_tasks = [len(cluster.tasks(i)) for i in range(2)]
    sessions = {os.getsid(p.pid) for p in cluster.procs} | {os.getsid(server.proc.pid)}
    workers = {os.getsid(p.pid): f"worker{i}" for i, p in enumerate(cluster.procs[1:])}
    sampler = Sampler(sessions)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pivot",
            "run",
            "-q",
            "--executor",
            "dask",
            "--scheduler",
            cluster.address,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env=pivot_env({}),
    )
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop()
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    coord = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    cpu: dict[str, float] = {"coordinator (pivot run tree)": coord}
    for pid, (_, _, own, kids, _) in sampler.seen.items():
        base = sampler.base.get(pid, (0, 0, 0.0, 0.0, ""))
        name = role(pid, sampler.seen, workers)
        if name.endswith("stage process"):
            continue  # counted in its server's waited children (or below when alive)
        cpu[name] = cpu.get(name, 0.0) + own - base[2]
        if name.endswith("stage server"):
            key = name.replace("stage server", "stage processes (forked)")
            cpu[key] = cpu.get(key, 0.0) + kids - base[3]
    print(f"run {n}: wall {end - start:.2f} s")
    for name in sorted(cpu):
        print(f"  {name:45s} {cpu[name]:6.2f} s")
    print(f"  {'total':45s} {sum(cpu.values()):6.2f} s")
    for i in range(2):
        tasks = sorted(cluster.tasks(i)[before_tasks[i] :], key=lambda t: t["started"])
        if not tasks:
            continue
        gaps = [b["started"] - a["ended"] for a, b in itertools.pairwise(tasks)]
        inside = sum(t["ended"] - t["started"] - t["stage_seconds"] for t in tasks)
        stages = sum(t["stage_seconds"] for t in tasks)
        print(
            f"  worker{i}: {len(tasks)} tasks, first started +{tasks[0]['started'] - start:.2f} s,"
            f" last ended +{tasks[-1]['ended'] - start:.2f} s (tail {end - tasks[-1]['ended']:.2f}"
            f" s), gaps {sum(gaps):.2f} s (median {sorted(gaps)[len(gaps) // 2] * 1000:.0f} ms),"
            f" in-task time outside the stage {inside:.2f} s, stages {stages:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="indep")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", default=str(HERE / "work" / "dask-breakdown"))
    parser.add_argument(
        "--cluster-env",
        action="append",
        default=[],
        help="NAME=VALUE in the scheduler's and workers' environment, e.g. "
        "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",
    )
    args = parser.parse_args()
    source = INDEP if args.scenario == "indep" else CHAIN.replace("{length}", "100")
    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with SeaweedFS(work / "seaweedfs") as server:
        server.create_bucket("pivot-dask-bench")
        env = pivot_env(server.env())
        env.update(item.split("=", 1) for item in args.cluster_env)
        cluster = Cluster(work / "cluster", env)
        try:
            for n in range(args.repeat):
                one_run(work, cluster, server, source, n)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
