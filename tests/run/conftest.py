"""Fixtures of the executor tests."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def worker_dir(tmp_path, monkeypatch):
    """A Dask worker's folder for tasks run in this process; its stage server closed after."""
    from pivot.run import worker

    monkeypatch.setenv("PIVOT_WORKER_DIR", str(tmp_path / "worker"))
    yield tmp_path / "worker"
    server = getattr(worker._SERVERS, "server", None)
    if server is not None:
        worker._SERVERS.server = None
        server.close()


@pytest.fixture
def coordinator_task():
    """Makes the task of one stage as a coordinator makes it: the pipeline file written
    into the project, the code bundle pushed to a folder remote, the planned fingerprint."""
    from pivot.cache.hashing import DIR
    from pivot.cache.workspace import workspace_of
    from pivot.discover.loading import load_file
    from pivot.fingerprint import fingerprint
    from pivot.project import Project
    from pivot.remote.stores import open_remote
    from pivot.remote.transfer import push_outputs
    from pivot.run import worker
    from pivot.run.bundle import build_bundle

    def make(
        project: pathlib.Path, remote_dir: pathlib.Path, pipeline: str, stage: str, output: str
    ) -> worker.Task:
        (project / "pipeline.py").write_text(pipeline)
        proj = Project(project)
        bundle = build_bundle(workspace_of(proj), {output})
        remote = open_remote(str(remote_dir), name="r", base=project)
        summary = push_outputs(proj, remote, [(bundle, DIR)])
        spec = load_file(proj, project / "pipeline.py").stages[stage]
        return worker.Task(
            stage_id=spec.id,
            source="pipeline.py",
            bundle=bundle,
            deps={},
            fingerprint=fingerprint(spec.func, project, spec.params),
            run_key="1" * 64,
            project_root=str(project),
            run_id="run-1",
            remote_url=str(remote_dir),
            remote_name="r",
            locations=summary.stored,
        )

    return make
