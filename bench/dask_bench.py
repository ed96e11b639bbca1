"""The Dask executor against the local one, on a loopback cluster and SeaweedFS.

    .venv/bin/python bench/dask_bench.py [--only indep,chain,fanout] [--workdir DIR] [--tuned]

Starts one `dask scheduler` and two `dask worker` processes (one thread each, separate
working folders) on 127.0.0.1 and one SeaweedFS server (bench/s3server.py), all stopped
at the end. Every project is generated fresh; each timing is the wall clock of one
`python -m pivot run` (a first run: every stage executes), next to the CPU seconds of
everything involved (the `pivot run` process tree; with Dask also the scheduler, the
workers with their stage servers, and SeaweedFS), which a loaded machine distorts less.

    indep    40 independent stages of 0.5 s CPU each: `--executor dask` on the 2 workers
             against `-j 2` locally (target: within 15 % of 40 x 0.5 / 2 = 10 s), and
             the floor without Pivot: the same 40 x 0.5 s of CPU as 40 plain Dask tasks
             on the same cluster (each forks a child that burns 0.5 s, as a stage is
             forked; a fresh interpreter that imports `distributed`, connects, submits
             and gathers), and as 40 forked processes two at a time without Dask
    chain    200 chained tiny stages: time per stage, dask against local (target: under
             30 ms per stage more than local), the medians of a task's steps from the
             workers' `.pivot-worker/tasks.log`, and Dask's own floor: the same number of
             chained no-op Dask tasks on the same cluster, without Pivot
    fanout   one stage writes 256 MB (random), 8 stages read it: the bytes each worker
             fetched from the remote (target: the output crosses to each worker at most
             once)

With `--tuned` the scheduler and workers run with the two CPU-saving settings of
docs/cluster.md (no stack sampling, a 1 s health tick); by default with Dask's defaults.

DVC has no cluster executor, so there is no DVC column here.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from s3server import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFS  # noqa: E402

INDEP = """
import time
from typing import Annotated
import pivot
from pivot import Out, loaders

p = pivot.Pipeline("indep")

def _stage(i):
    def burn() -> Annotated[str, Out(f"out/{i}.txt", loaders.Text())]:
        start = time.process_time()
        n = 0
        while time.process_time() - start < 0.5:
            n += 1
        return f"{i}\\n"
    burn.__name__ = f"s{i}"
    return burn

for i in range(40):
    p.register(_stage(i), name=f"s{i}")
"""

CHAIN = """
from typing import Annotated
import pivot
from pivot import Dep, Out, loaders

p = pivot.Pipeline("chain")

def first() -> Annotated[str, Out("out/0.txt", loaders.Text())]:
    return "0\\n"

def _stage(i):
    def step(
        prev: Annotated[str, Dep(f"out/{i - 1}.txt", loaders.Text())],
    ) -> Annotated[str, Out(f"out/{i}.txt", loaders.Text())]:
        return f"{i}\\n"
    return step

p.register(first, name="s0")
for i in range(1, {length}):
    p.register(_stage(i), name=f"s{i}")
"""

FANOUT = """
import hashlib, os, pathlib
from typing import Annotated
import pivot
from pivot import Dep, Out, loaders

p = pivot.Pipeline("fan")

def big() -> Annotated[pathlib.Path, Out("big.bin")]:
    with open("big.bin", "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    return pathlib.Path("big.bin")

def _reader(i):
    def read(
        data: Annotated[pathlib.Path, Dep("big.bin")],
    ) -> Annotated[str, Out(f"out/{i}.txt", loaders.Text())]:
        h = hashlib.blake2b()
        with open(data, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest() + f" {i}\\n"
    return read

p.register(big)
for i in range(8):
    p.register(_reader(i), name=f"r{i}")
"""


# The floor of the indep scenario without Pivot. BURN is the stages' loop; each script
# runs in a fresh interpreter, as `pivot run` does.
BURN = """
import os, time

def burn():
    start = time.process_time()
    n = 0
    while time.process_time() - start < 0.5:
        n += 1

def forked():
    pid = os.fork()
    if pid == 0:
        burn()
        os._exit(0)
    os.waitpid(pid, 0)
"""

BARE_DASK = f"""{BURN}
import sys
import distributed

def task(i):
    forked()
    return i

with distributed.Client(sys.argv[1], timeout="60s", set_as_default=False) as client:
    client.gather(client.map(task, range(40), pure=False))
"""

BARE_PROCESSES = f"""{BURN}
running = set()
for i in range(40):
    if len(running) == 2:
        running.discard(os.wait()[0])
    pid = os.fork()
    if pid == 0:
        burn()
        os._exit(0)
    running.add(pid)
while running:
    running.discard(os.wait()[0])
"""


# The cluster settings docs/cluster.md recommends for a cluster sharing a few cores with
# its stages ("Tuning a cluster for many short stages").
TUNED = {
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler and two one-thread workers, each in its own folder."""

    def __init__(self, base: pathlib.Path, env: dict[str, str]) -> None:
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.workers = [base / "worker0", base / "worker1"]
        self.procs: list[subprocess.Popen] = []
        port = self.address.rpartition(":")[2]
        self._start(
            [
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                port,
                "--no-dashboard",
            ],
            base / "scheduler",
            env,
        )
        for folder in self.workers:
            self._start(
                [
                    "distributed.cli.dask_worker",
                    self.address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                ],
                folder,
                env,
            )
        import distributed

        try:
            with distributed.Client(self.address, timeout="60s") as client:
                client.wait_for_workers(2, timeout=120)
        except BaseException:
            self.stop()
            raise

    def _start(self, args: list[str], cwd: pathlib.Path, env: dict[str, str]) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(cwd.parent / f"{cwd.name}.log", "wb")  # noqa: SIM115 (lives with the process)
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def cpu_seconds(self) -> float:
        """CPU the scheduler and the workers (with every process they started) used."""
        sessions = {os.getsid(proc.pid) for proc in self.procs if proc.poll() is None}
        return sum(cpu for sid, cpu in _process_cpu() if sid in sessions)

    def tasks(self, worker: int) -> list[dict]:
        log = self.workers[worker] / ".pivot-worker" / "tasks.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _process_cpu() -> list[tuple[int, float]]:
    """(session id, user + system CPU of it and its waited children) of every process."""
    found = []
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found.append((int(fields[3]), sum(int(f) for f in fields[11:15]) / tick))
    return found


def make_project(root: pathlib.Path, source: str, server: SeaweedFS, bucket: str) -> None:
    root.mkdir(parents=True)
    (root / "pipeline.py").write_text(textwrap.dedent(source).lstrip())
    subprocess.run(
        [sys.executable, "-m", "pivot", "init"],
        cwd=root,
        check=True,
        capture_output=True,
        env=pivot_env({}),
    )
    shared = {
        "default_remote": "s3",
        "remotes": {
            "s3": {
                "url": f"s3://{bucket}/{root.name}",
                "endpoint_url": server.endpoint,
                "region": REGION,
            }
        },
    }
    local = {"remotes": {"s3": {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}}}
    (root / ".pivot" / "config.yaml").write_text(json.dumps(shared))
    (root / ".pivot" / "config.local.yaml").write_text(json.dumps(local))


def pivot_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def timed_run(root: pathlib.Path, *args: str, others=()) -> tuple[float, float]:
    """Wall and CPU seconds of one `pivot run`: the CPU of its process tree and of the
    `others` (objects with `cpu_seconds()`) while it ran."""
    return timed(root, ["-m", "pivot", "run", "-q", *args], others)


def timed(root: pathlib.Path, args: list[str], others=()) -> tuple[float, float]:
    """Wall and CPU seconds of one `python ARGS` in `root` (see `timed_run`)."""
    subprocess.run(["sync"], check=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    others_before = sum(o.cpu_seconds() for o in others)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=pivot_env({}),
    )
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    cpu += sum(o.cpu_seconds() for o in others) - others_before
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed in {root}:\n{proc.stderr}")
    return took, cpu


def step_medians(tasks: list[dict]) -> str:
    """Medians (ms) of a task's steps, and of the gap between one task's end and the next
    one's start (the coordinator and the Dask scheduler in between). A push made behind
    its task (`pushed` later than `ended` in tasks.log) is not on a chain's path: the
    count of tasks that started before the push of the task before them ended says so."""
    ordered = sorted(tasks, key=lambda t: t["started"])
    steps = {
        step: statistics.median(t[f"{step}_seconds"] for t in tasks) * 1000
        for step in ("fetch", "run", "stage", "push")
    }
    steps["gap"] = (
        statistics.median(b["started"] - a["ended"] for a, b in itertools.pairwise(ordered)) * 1000
    )
    listed = sum(bool(t["fetch_listed"] or t["push_listed"]) for t in tasks)
    overlapped = sum(
        a["pushed"] is not None and b["started"] < a["pushed"]
        for a, b in itertools.pairwise(ordered)
    )
    shown = ", ".join(f"{step} {ms:.0f}" for step, ms in steps.items())
    return (
        f"{shown} ms (a task's path: run + gap; the push runs behind it, and {overlapped} of "
        f"{len(ordered) - 1} tasks started before the push of the one before them ended); "
        f"{listed} of {len(tasks)} tasks listed the remote"
    )


def _stamped(*upstream: tuple[float, float]) -> tuple[float, float]:
    """A no-op Dask task: when it started and ended (its upstream's result unused)."""
    return time.time(), time.time()


def dask_floor(address: str, n: int) -> str:
    """Dask's own cost of a chain, without Pivot: `n` no-op tasks each depending on the
    previous one, submitted at once as the executor submits a chain, on the same
    cluster; the median gap between one task's end and the next one's start, the wall
    time per task, and the scheduler's and workers' CPU per task."""
    import distributed

    with distributed.Client(address, timeout="60s") as client:
        client.run(time.time)  # connected and every worker answering
        start = time.perf_counter()
        futures = [client.submit(_stamped, key=f"floor-0-{time.time_ns()}", pure=False)]
        for i in range(1, n):
            futures.append(
                client.submit(_stamped, futures[-1], key=f"floor-{i}-{time.time_ns()}", pure=False)
            )
        stamps = client.gather(futures)
        took = time.perf_counter() - start
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(stamps)]
    return (
        f"gap {statistics.median(gaps) * 1000:.1f} ms (median), "
        f"{took / n * 1000:.1f} ms wall per task"
    )


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="indep,chain,fanout")
    parser.add_argument("--workdir", default=str(HERE / "work" / "dask"))
    parser.add_argument("--chain-length", type=int, default=200)
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="run the cluster with the CPU-saving settings of docs/cluster.md (TUNED) "
        "instead of Dask's defaults",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with SeaweedFS(work / "seaweedfs") as server:
        server.create_bucket("pivot-dask-bench")
        cluster_env = pivot_env(server.env())
        if args.tuned:
            cluster_env.update(TUNED)
            print(f"cluster settings: {' '.join(f'{k}={v}' for k, v in TUNED.items())}")
        cluster = Cluster(work / "cluster", cluster_env)
        dask = ["--executor", "dask", "--scheduler", cluster.address]
        involved = (cluster, server)
        try:
            if "indep" in only:
                make_project(work / "indep-dask", INDEP, server, "pivot-dask-bench")
                make_project(work / "indep-local", INDEP, server, "pivot-dask-bench")
                d, dcpu = timed_run(work / "indep-dask", *dask, others=involved)
                bare = work / "indep-bare"
                bare.mkdir()
                (bare / "dask_tasks.py").write_text(BARE_DASK)
                (bare / "processes.py").write_text(BARE_PROCESSES)
                bd, bdcpu = timed(bare, ["dask_tasks.py", cluster.address], involved)
                bp, bpcpu = timed(bare, ["processes.py"])
                loc, lcpu = timed_run(work / "indep-local", "-j", "2", "--no-remote")
                print(
                    f"indep: 40 x 0.5 s CPU  dask (2 workers x 1 thread) {d:.1f} s "
                    f"(CPU {dcpu:.1f} s)   local -j 2 {loc:.1f} s (CPU {lcpu:.1f} s)   "
                    f"ideal 10.0 s   dask/ideal {d / 10:.2f}: within 15 % "
                    f"{verdict(d <= 11.5)}"
                )
                print(
                    f"indep: without Pivot  40 plain Dask tasks, each forking a 0.5 s "
                    f"child, same cluster {bd:.1f} s (CPU {bdcpu:.1f} s, {bd / 10:.2f}x)   "
                    f"40 forked processes 2 at a time, no Dask {bp:.1f} s "
                    f"(CPU {bpcpu:.1f} s, {bp / 10:.2f}x)   Pivot's share over plain Dask "
                    f"{d - bd:.1f} s (CPU {dcpu - bdcpu:.1f} s)"
                )
            if "chain" in only:
                n = args.chain_length
                chain = CHAIN.replace("{length}", str(n))
                make_project(work / "chain-dask", chain, server, "pivot-dask-bench")
                make_project(work / "chain-local", chain, server, "pivot-dask-bench")
                before = [len(cluster.tasks(i)) for i in range(2)]
                d, dcpu = timed_run(work / "chain-dask", *dask, others=involved)
                loc, lcpu = timed_run(work / "chain-local", "-j", "2", "--no-remote")
                overhead = (d - loc) / n * 1000
                print(
                    f"chain: {n} tiny stages  dask {d:.1f} s ({d / n * 1000:.0f} ms/stage, "
                    f"CPU {dcpu / n * 1000:.0f} ms/stage)  local {loc:.1f} s "
                    f"({loc / n * 1000:.0f} ms/stage, CPU {lcpu / n * 1000:.0f} ms/stage)  "
                    f"overhead {overhead:.0f} ms/stage (CPU {(dcpu - lcpu) / n * 1000:.0f}): "
                    f"under 30 ms {verdict(overhead < 30)}"
                )
                tasks = [t for i in range(2) for t in cluster.tasks(i)[before[i] :]]
                print(f"chain: task steps (medians) {step_medians(tasks)}")
                before_cpu = cluster.cpu_seconds()
                floor = dask_floor(cluster.address, n)
                floor_cpu = (cluster.cpu_seconds() - before_cpu) / n * 1000
                print(
                    f"chain: Dask alone, {n} chained no-op tasks: {floor}, "
                    f"CPU {floor_cpu:.1f} ms per task (scheduler and workers)"
                )
            if "fanout" in only:
                before = [len(cluster.tasks(i)) for i in range(2)]
                make_project(work / "fan", FANOUT, server, "pivot-dask-bench")
                d, dcpu = timed_run(work / "fan", *dask, others=involved)
                size = (work / "fan" / "big.bin").stat().st_size
                once = True
                for i in range(2):
                    new = cluster.tasks(i)[before[i] :]
                    stages = ", ".join(t["stage"].split("/")[1] for t in new)
                    fetched = sum(t["fetched_bytes"] for t in new)
                    once = once and fetched <= size * 1.01  # packs add a few bytes
                    print(
                        f"fanout worker{i}: ran {stages}; fetched {fetched / 1e6:.1f} MB "
                        f"from the remote in {len(new)} task(s)"
                    )
                print(
                    f"fanout: run {d:.1f} s (CPU {dcpu:.1f} s); the {size / 1e6:.1f} MB "
                    f"output crossed to each worker at most once: {verdict(once)}"
                )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
