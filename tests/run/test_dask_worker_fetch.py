"""A cluster worker's fetch of a task's inputs (`run/worker.py`, in this process, against
a real folder remote): from the locations the task names without listing the remote, and
after a listing when those locations are stale (a pack merged away by a remote gc)."""

from __future__ import annotations

import pathlib

from pivot.cache.hashing import DIR, FILE
from pivot.cache.objects import LocalCache
from pivot.cache.workspace import workspace_of
from pivot.project import Project
from pivot.remote.stores import open_remote
from pivot.remote.transfer import push_outputs
from pivot.run import worker
from pivot.run.bundle import build_bundle


def _pushed(project: pathlib.Path, remote_dir: pathlib.Path):
    """A bundle and a data file stored and pushed by the 'coordinator' `project`; returns
    the task naming them and where the push put their blobs."""
    (project / "pipeline.py").write_text("# the pipeline\n")
    (project / "data.txt").write_text("some data\n")
    proj = Project(project)
    ws = workspace_of(proj)
    bundle = build_bundle(ws, set())
    stored, _ = ws.cache.add_output(project / "data.txt", project)
    remote = open_remote(str(remote_dir), name="r", base=project)
    summary = push_outputs(proj, remote, [(bundle, DIR), (stored.hash, FILE)])
    assert not summary.missing and summary.stored
    task = worker.Task(
        stage_id="p/s",
        source="pipeline.py",
        bundle=bundle,
        deps={"data.txt": (stored.hash, FILE)},
        fingerprint={},
        run_key="0" * 64,
        project_root=str(project),
        run_id="run",
        remote_url=str(remote_dir),
        remote_name="r",
    )
    return task, summary.stored, stored.hash


def _fetch(base: pathlib.Path, task: worker.Task) -> tuple[dict, LocalCache]:
    home = worker._home(base)
    opened = worker._Opened(open_remote(task.remote_url, name="r", base=home.root))
    return worker._fetch(task, home, opened), LocalCache(home.cache_dir, home.tmp_dir)


def test_named_locations_need_no_listing_and_stale_ones_fall_back(project, tmp_path):
    remote_dir = tmp_path / "remote"
    task, stored, data_hash = _pushed(project, remote_dir)
    wanted = [(task.bundle, DIR), (data_hash, FILE)]

    named = worker.Task(**{**task.__dict__, "locations": stored})
    facts, cache = _fetch(tmp_path / "w0", named)
    assert facts["fetch_listed"] is False
    assert all(not cache.missing(*output) for output in wanted)
    assert cache.read_bytes(data_hash) == b"some data\n"

    # Every location points into a pack that is not there (merged into another by a gc):
    # the worker lists the remote and reads the blobs where they are now.
    stale = {d: loc._replace(pack="f" * len(loc.pack)) for d, loc in stored.items()}
    facts, cache = _fetch(tmp_path / "w1", worker.Task(**{**task.__dict__, "locations": stale}))
    assert facts["fetch_listed"] is True
    assert all(not cache.missing(*output) for output in wanted)
    assert cache.read_bytes(data_hash) == b"some data\n"

    # Named nowhere: a listing finds them.
    facts, cache = _fetch(tmp_path / "w2", task)
    assert facts["fetch_listed"] is True
    assert cache.read_bytes(data_hash) == b"some data\n"
