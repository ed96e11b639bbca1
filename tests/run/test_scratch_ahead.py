"""`worker.run_task` in this process, with a real stage server and a real folder remote:
the scratch project a task runs in is laid out while the task before it ends (and that
one's removed behind it), yet each stage still starts from a fresh copy of the code
bundle, and nothing of a task's scratch project is left once its removal ran."""

from __future__ import annotations

import pathlib
import time

from pivot.cache.hashing import DIR
from pivot.cache.workspace import workspace_of
from pivot.discover.loading import load_file
from pivot.fingerprint import fingerprint
from pivot.project import Project
from pivot.remote.stores import open_remote
from pivot.remote.transfer import push_outputs
from pivot.run import worker
from pivot.run.bundle import build_bundle

PIPELINE = """
import os
import pathlib
from typing import Annotated
import pivot
from pivot import Out, loaders

p = pivot.Pipeline("p")

def litter() -> Annotated[str, Out("litter.txt", loaders.Text())]:
    pathlib.Path("stray.txt").write_text("left by litter")
    with open("pipeline.py", "a") as f:
        f.write("raise RuntimeError('pipeline.py edited by the stage before')\\n")
    return "littered\\n"

def check() -> Annotated[str, Out("check.txt", loaders.Text())]:
    if os.path.exists("stray.txt"):
        raise RuntimeError("stray.txt of the stage before is here")
    return "clean\\n"

p.register(litter)
p.register(check)
"""


def _tasks(project: pathlib.Path, remote_dir: pathlib.Path) -> list[worker.Task]:
    """The tasks of p/litter and p/check as a coordinator makes them (one run)."""
    (project / "pipeline.py").write_text(PIPELINE)
    proj = Project(project)
    bundle = build_bundle(workspace_of(proj), {"litter.txt", "check.txt"})
    remote = open_remote(str(remote_dir), name="r", base=project)
    summary = push_outputs(proj, remote, [(bundle, DIR)])
    stages = load_file(proj, project / "pipeline.py").stages
    return [
        worker.Task(
            stage_id=stages[name].id,
            source="pipeline.py",
            bundle=bundle,
            deps={},
            fingerprint=fingerprint(stages[name].func, project, stages[name].params),
            run_key=str(n) * 64,
            project_root=str(project),
            run_id="run-1",
            remote_url=str(remote_dir),
            remote_name="r",
            locations=summary.stored,
        )
        for n, name in enumerate(["litter", "check"], start=1)
    ]


def test_a_stage_finds_a_fresh_scratch_project_laid_out_ahead(project, tmp_path, worker_dir):
    litter, check = _tasks(project, tmp_path / "remote")

    first = worker.run_task(litter, lambda message: None)
    assert first.ok, first.error
    server = worker._SERVERS.server
    # The next task's scratch project is being laid out: a fresh copy of the bundle.
    assert server.take_layout(litter.bundle)
    assert sorted(p.name for p in server.root.iterdir()) == [".pivot", "pipeline.py"]
    assert (server.root / "pipeline.py").read_text() == PIPELINE
    server.lay_out_ahead(worker._home(worker_dir), litter.bundle)

    # The stage after it, on the same server, sees neither the file the first one left
    # nor its edit of the pipeline file.
    second = worker.run_task(check, lambda message: None)
    assert second.ok, second.error
    assert worker._SERVERS.server is server

    # Each task's scratch project is gone once its removal ran; only the one laid out
    # for the server's next task stays, and it goes with the server.
    scratch = worker_dir / "scratch"
    deadline = time.monotonic() + 60
    while any(worker._ASIDE in p.name for p in scratch.iterdir()):
        assert time.monotonic() < deadline, list(scratch.iterdir())
        time.sleep(0.05)
    assert [p.name for p in scratch.iterdir()] == [server.root.name]
    worker._SERVERS.server = None
    server.close()
    assert list(scratch.iterdir()) == []
