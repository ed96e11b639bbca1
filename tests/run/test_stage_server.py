"""The cluster worker's stage server (`python -m pivot.run.stage_process`), as a real
process and behind a real one-worker Dask cluster: what it learns while it fingerprints
a run's stages, and the packages its pipeline files imported, never outlive the run."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import subprocess
import sys

import pytest
from dask_cluster import start_cluster, stop_cluster
from s3_servers import ACCESS_KEY, REGION, SECRET_KEY
from support import PYTHONPATH, PivotCLI, write_files

PIPELINE = """
from typing import Annotated
import pivot, pivotfake
from pivot import Out, loaders

p = pivot.Pipeline("dist")

def versioned() -> Annotated[str, Out("v.txt", loaders.Text())]:
    return pivotfake.VERSION

p.register(versioned)
"""


def _install(site: pathlib.Path, version: str) -> None:
    """`pivotfake` at `version` in `site` (an earlier version's dist-info removed)."""
    (site / "pivotfake").mkdir(parents=True, exist_ok=True)
    (site / "pivotfake" / "__init__.py").write_text(f"VERSION = {version!r}\n")
    for old in site.glob("pivotfake-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"pivotfake-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pivotfake\nVersion: {version}\n")
    (info / "top_level.txt").write_text("pivotfake\n")


class _Server:
    """The stage server, fed requests as the worker feeds it."""

    def __init__(self, site: pathlib.Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pivot.run.stage_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": f"{PYTHONPATH}{os.pathsep}{site}"},
        )

    def run(self, root: pathlib.Path, run_id: str) -> object:
        """Run the stage dist/versioned of `root` as part of run `run_id` with an empty
        planned fingerprint; the child's Outcome."""
        tmp = root / ".pivot" / "tmp"
        tmp.mkdir(exist_ok=True)
        result = tmp / "outcome.pickle"
        result.unlink(missing_ok=True)
        request = {
            "root": str(root),
            "run": run_id,
            "stage_id": "dist/versioned",
            "source": "pipeline.py",
            "fingerprint": {},
            "cache_dir": str(root / ".pivot" / "cache"),
            "tmp_dir": str(tmp),
            "result": str(result),
        }
        (tmp / "request.json").write_text(json.dumps(request))
        line = {"request": str(tmp / "request.json"), "log": str(tmp / "output.log")}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(line) + "\n").encode())
        self.proc.stdin.flush()
        assert "pid" in json.loads(self.proc.stdout.readline())
        assert "status" in json.loads(self.proc.stdout.readline())
        return pickle.loads(result.read_bytes())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_a_package_upgraded_between_runs_is_seen_by_the_next_run(project, tmp_path):
    write_files(project, {"pipeline.py": PIPELINE})
    site = tmp_path / "site"
    _install(site, "2.0")
    server = _Server(site)
    try:
        first = server.run(project, "run-1")
        again = server.run(project, "run-1")
        _install(site, "3.0")  # on the worker, while its stage server lives
        second = server.run(project, "run-2")
    finally:
        server.close()
    for outcome in (first, again):
        assert not outcome.ok
        assert "dist:pivotfake (coordinator: absent, worker: 2.0)" in outcome.error, outcome.error
    assert not second.ok
    assert "dist:pivotfake (coordinator: absent, worker: 3.0)" in second.error, second.error
    assert not (project / "v.txt").exists()


@pytest.mark.s3
def test_a_package_upgraded_on_the_worker_between_runs_runs_its_new_code(
    project, seaweedfs, tmp_path
):
    """One worker (so both runs land on the same worker thread): the stage server of the
    first run imported `pivotfake` 2.0; after an upgrade to 3.0 on the worker and the
    coordinator, the second run runs 3.0's code, not the module left in memory."""
    worker_site, coordinator_site = tmp_path / "worker-site", tmp_path / "coordinator-site"
    for site in (worker_site, coordinator_site):
        _install(site, "2.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=f"{PYTHONPATH}{os.pathsep}{worker_site}",
    )
    cluster = start_cluster(tmp_path / "dask", env, workers=1)
    try:
        write_files(project, {"pipeline.py": PIPELINE})
        remote = {"url": f"s3://{seaweedfs.new_bucket()}/cache"}
        remote.update(endpoint_url=seaweedfs.endpoint, region=REGION)
        shared = {
            "default_remote": "weed",
            "remotes": {"weed": remote},
            "executor": "dask",
            "dask": {"scheduler": cluster.address, "retries": 0},
        }
        (project / ".pivot" / "config.yaml").write_text(json.dumps(shared))
        secrets = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
        local = {"remotes": {"weed": secrets}}
        (project / ".pivot" / "config.local.yaml").write_text(json.dumps(local))
        pivot = PivotCLI(project)
        path = f"{PYTHONPATH}{os.pathsep}{coordinator_site}"
        pivot("run", PYTHONPATH=path)
        assert (project / "v.txt").read_text() == "2.0"
        for site in (worker_site, coordinator_site):
            _install(site, "3.0")
        result = pivot("run", PYTHONPATH=path)
        assert "dist/versioned" in result.stdout, result.stdout
        assert (project / "v.txt").read_text() == "3.0"
        assert len(cluster.tasks(0)) == 2
    finally:
        stop_cluster(cluster)
