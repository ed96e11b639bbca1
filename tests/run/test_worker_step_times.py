"""A worker's per-task step times (`tasks.log`): a fresh worker's first task waits for
`worker.warm` to finish making the remote's client; that wait is its own step (`open`),
not counted as fetching the stage's code and deps."""

from __future__ import annotations

import json
import threading

from pivot.run import worker
from tests.run.test_push_behind import PIPELINE

HOLD = 1.5  # seconds `warm` holds the worker's remotes while it makes the remote's client


def test_the_wait_for_the_warm_up_is_not_counted_as_fetching(
    project, tmp_path, worker_dir, coordinator_task
):
    task = coordinator_task(project, tmp_path / "remote", PIPELINE, "made", "made.txt")
    held, calling = threading.Event(), threading.Event()

    def warming() -> None:  # as `warm` does: the lock held while boto3 makes its client
        with worker._REMOTES_LOCK:
            held.set()
            calling.wait()
            threading.Event().wait(HOLD)

    warm = threading.Thread(target=warming)
    warm.start()
    held.wait()
    calling.set()
    outcome = worker.run_task(task, lambda message: None)
    warm.join()

    assert outcome.ok, outcome.error
    (line,) = (worker_dir / "tasks.log").read_text().splitlines()
    times = json.loads(line)
    # Most of the hold (the task may start a little after the hold began, on a busy machine).
    assert times["open_seconds"] >= HOLD / 2
    # The steps are disjoint parts of the task: together no longer than it took.
    steps = sum(times[f"{step}_seconds"] for step in ("open", "fetch", "run", "push"))
    assert steps <= times["pushed"] - times["started"] + 0.01, times
