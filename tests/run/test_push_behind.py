"""`worker.run_task` in this process, with a real stage server and a real folder remote:
a task of a coordinator that waits for the worker's word on the push returns before the
push ends and then announces it; a task pickled by a coordinator that does not wait
(lacking `push_behind`) has its outputs on the remote before it returns."""

from __future__ import annotations

import pathlib
import pickle
import queue
from dataclasses import replace

from pivot.project import Project
from pivot.remote.stores import open_remote
from pivot.remote.transfer import remote_contents
from pivot.run import worker

PIPELINE = """
from typing import Annotated
import pivot
from pivot import Out, loaders

p = pivot.Pipeline("p")

def made() -> Annotated[str, Out("made.txt", loaders.Text())]:
    return "made\\n"

p.register(made)
"""


def _on_remote(remote_dir: pathlib.Path, reader: pathlib.Path, digest: str) -> bool:
    """Whether the remote's indexes list `digest`, as a fresh clone `reader` reads them."""
    from pivot.project import init_project

    reader.mkdir(exist_ok=True)
    init_project(reader)
    remote = open_remote(str(remote_dir), name="r", base=reader)
    return remote_contents(Project(reader), remote).has_blob(digest)


def test_a_waited_for_task_returns_before_its_push_and_announces_it(
    project, tmp_path, worker_dir, coordinator_task
):
    remote_dir = tmp_path / "remote"
    task = replace(
        coordinator_task(project, remote_dir, PIPELINE, "made", "made.txt"), push_behind=True
    )
    words: queue.Queue[dict] = queue.Queue()

    outcome = worker.run_task(task, words.put)
    assert outcome.ok and outcome.pushing, outcome.error
    digest = outcome.outs["made.txt"]["hash"]

    done = worker.pushed(outcome, words.get(timeout=60))
    assert done is not None and done.ok and not done.pushing, done
    assert digest in done.locations[digest]
    assert _on_remote(remote_dir, tmp_path / "reader", digest)
    log = (worker_dir / "tasks.log").read_text().splitlines()
    assert len(log) == 1 and '"pushed": ' in log[0]

    # A word about other bytes (the task ran again elsewhere) does not complete it.
    other = {"ok": True, "outs": {"made.txt": "0" * 64}, "locations": pickle.dumps({})}
    assert worker.pushed(outcome, other) is None


def test_a_task_from_a_coordinator_that_does_not_wait_is_pushed_before_it_returns(
    project, tmp_path, worker_dir, coordinator_task
):
    remote_dir = tmp_path / "remote"
    task = coordinator_task(project, remote_dir, PIPELINE, "made", "made.txt")
    # As an older coordinator pickles it: without the field.
    state = {k: v for k, v in task.__dict__.items() if k != "push_behind"}
    old = object.__new__(worker.Task)
    old.__dict__.update(state)
    old = pickle.loads(pickle.dumps(old))
    assert old.push_behind is False
    words: list[dict] = []

    outcome = worker.run_task(old, words.append)
    assert outcome.ok and not outcome.pushing, outcome.error
    digest = outcome.outs["made.txt"]["hash"]
    assert words == []
    assert digest in outcome.locations
    assert _on_remote(remote_dir, tmp_path / "reader", digest)
