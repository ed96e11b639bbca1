"""A real Dask cluster on 127.0.0.1: `dask scheduler` and two `dask worker` processes
(one thread each), each worker in its own temp working directory, sharing nothing with
the test's projects but the remote."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from support import PYTHONPATH, free_ports


@dataclass
class Cluster:
    address: str
    worker_dirs: list[pathlib.Path]
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[pathlib.Path] = field(default_factory=list)

    def tasks(self, worker: int) -> list[dict]:
        """The task log a worker wrote (`.pivot-worker/tasks.log`: one JSON line per task)."""
        import json

        log = self.worker_dirs[worker] / ".pivot-worker" / "tasks.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def all_tasks(self) -> list[dict]:
        return [t for i in range(len(self.worker_dirs)) for t in self.tasks(i)]

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in self.logs)


def start_cluster(base: pathlib.Path, env: dict[str, str], workers: int = 2) -> Cluster:
    """Start the scheduler and `workers` workers (worker 0 offers the resource GPU=1); the
    scheduler reports a task whose worker died at once (allowed-failures 0), so Pivot's
    own retries are what a test sees."""
    port = free_ports(1)[0]
    address = f"tcp://127.0.0.1:{port}"
    common = {
        **os.environ,
        **env,
        "PYTHONPATH": env.get("PYTHONPATH", PYTHONPATH),
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
        "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
    }
    cluster = Cluster(address, [])
    scheduler = [
        sys.executable,
        "-m",
        "distributed.cli.dask_scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-dashboard",
    ]
    cluster.procs.append(_start(scheduler, base / "scheduler", common, cluster))
    for i in range(workers):
        folder = base / f"worker{i}"
        cluster.worker_dirs.append(folder)
        worker = [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--name",
            f"worker{i}",
            "--local-directory",
            str(folder / "dask"),
        ]
        if i == 0:
            worker += ["--resources", "GPU=1"]
        cluster.procs.append(_start(worker, folder, common, cluster))
    wait_for_workers(cluster, workers)
    return cluster


def _start(cmd: list[str], cwd: pathlib.Path, env: dict, cluster: Cluster) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd.parent / f"{cwd.name}.log"
    cluster.logs.append(log)
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for_workers(cluster: Cluster, count: int, timeout: float = 90) -> None:
    """Wait until `count` workers are connected to the scheduler."""
    import distributed

    deadline = time.monotonic() + timeout
    while True:
        try:
            with distributed.Client(cluster.address, timeout="5s") as client:
                client.wait_for_workers(count, timeout=max(1, deadline - time.monotonic()))
                return
        except (OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Dask cluster did not start: {exc}\n{cluster.output()}"
                ) from exc
            time.sleep(0.5)


def stop_cluster(cluster: Cluster) -> None:
    for proc in reversed(cluster.procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in cluster.procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
