"""The recorder's flush (`run/recording.py`) driven directly, with real staged blobs, run
records and lock files in a real project: a failed background flush discards the stages
queued after it (no staged blob left behind), and a batch handed to the flush thread that
the thread has not begun is taken back and recorded by `flush` (exactly once)."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from pivot.cache.hashing import hash_bytes
from pivot.cache.workspace import Workspace, open_workspace
from pivot.define.stage import StageSpec
from pivot.errors import ProjectError
from pivot.run.executor import Outcome
from pivot.run.lockfile import read_lock
from pivot.run.plan import RUN, Decision
from pivot.run.recording import Recorder


@pytest.fixture
def ws(project):
    ws = open_workspace(project)
    yield ws
    ws.state.close()


def _finished(ws: Workspace, name: str) -> tuple[Decision, Outcome]:
    """A stage `p/NAME` that ran, with one output blob staged as a worker leaves it."""
    stage = StageSpec("p", name, None, ws.project.root / "pipeline.py", ws.project.root, [], [])
    data = f"output of {name}".encode()
    with ws.cache.batch() as batch:
        digest = batch.put_bytes(data)
        staged = batch.hand_over()
    out = {"hash": digest, "size": len(data), "kind": "file"}
    decision = Decision(stage, RUN, run_key=hash_bytes(name.encode()))
    return decision, Outcome(f"p/{name}", True, outs={f"{name}.txt": out}, staged=staged)


def _recorder(ws: Workspace) -> Recorder:
    return Recorder(ws, lambda decision, outs: decision.new_lock(outs))


def _leftover_temps(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.project.tmp_dir.iterdir() if p.name.startswith("blob"))


def test_a_failed_background_flush_discards_the_stages_queued_after_it(ws):
    (ws.project.stages_dir / "p").write_text("in the way")  # the lock folder cannot be made
    recorder = _recorder(ws)
    first, first_outcome = _finished(ws, "first")
    recorder.add(first, first_outcome)
    recorder.flush_in_background()
    concurrent.futures.wait(recorder.flushing())
    second, second_outcome = _finished(ws, "second")
    recorder.add(second, second_outcome)  # queued after the flush that failed
    assert _leftover_temps(ws)
    with pytest.raises(ProjectError, match=r"\.pivot/stages/p is a file"):
        recorder.flush()
    recorder.close()
    assert _leftover_temps(ws) == []
    assert second_outcome.staged == []
    for decision in (first, second):
        assert not ws.runs.path(decision.run_key).exists()
    assert not ws.cache.has(second_outcome.outs["second.txt"]["hash"])


def test_a_batch_the_flush_thread_has_not_begun_is_recorded_by_flush(ws):
    recorder = _recorder(ws)
    busy = threading.Event()
    gate = threading.Event()
    recorder.add(*_finished(ws, "warm"))
    recorder.flush()
    # The recorder's one thread is kept busy, so the batch handed to it waits unbegun.
    recorder._thread = concurrent.futures.ThreadPoolExecutor(1)
    recorder._thread.submit(lambda: (busy.set(), gate.wait(30)))
    busy.wait(30)
    decision, outcome = _finished(ws, "handed")
    recorder.add(decision, outcome)
    recorder.flush_in_background()
    assert recorder.flushing()
    try:
        recorder.flush()  # takes the batch back and records it here, while the thread waits
        lock = read_lock(ws.project.stages_dir, "p/handed")
        assert lock is not None and lock.outs == outcome.outs
        assert ws.runs.path(decision.run_key).exists()
        assert ws.cache.has(outcome.outs["handed.txt"]["hash"])
        assert _leftover_temps(ws) == []
    finally:
        gate.set()
        recorder.close()
    assert recorder.flushing() == []  # nothing was left for the thread to record again
