"""The scheduler's group commit: the stages a run executed are recorded a batch at a time.

A finished stage leaves its output blobs staged (temp files in the cache's tmp folder,
see `Outcome.staged`). One flush makes the blobs of every stage finished since the last
flush durable together with their run records and lock files (one round of concurrent
fsyncs, so the journal commits them together), then publishes them in order: the blobs
under their hash names, then the run records, then the lock files, and fsyncs the
folders renamed into (each once per flush: blobs' before the records are renamed, then
those of the records and locks), so the renames survive a power loss. A lock file or run
record is therefore never visible before every blob it names is durable and in the cache;
a kill between flushes loses only the records of the last stages (they run again), never
leaves one half-written. A lock that records metric values read from the cache is written
after the blobs are published, in a second round.

While stages run, a due batch is flushed on a thread of its own (`flush_in_background`,
one batch at a time), so that the scheduler meanwhile hands out the next stages; at the
end of a run, on a failure and on Ctrl-C, `flush` waits for it and records the rest.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pivot import _fs
from pivot.cache.batch import FSYNC_WORKERS
from pivot.cache.runs import encode_record
from pivot.run.in_the_way import in_the_way
from pivot.run.lock_metrics import reads_cache
from pivot.run.lockfile import Lock, lock_path

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from pivot.cache.workspace import Workspace
    from pivot.run.executor import Outcome
    from pivot.run.plan import Decision

# A finished stage waits at most this long (while others run) to be recorded, and a batch
# holds at most this many stages: what a kill of the run can make run again.
WINDOW = 0.2
MAX_BATCH = 256


class Recorder:
    """Finished stages waiting to be recorded, and their flush (`new_lock` makes a
    stage's lock from its decision and outputs)."""

    def __init__(
        self, ws: Workspace, new_lock: Callable[[Decision, dict[str, dict[str, Any]]], Lock]
    ) -> None:
        self.ws = ws
        self._new_lock = new_lock
        self._pending: list[tuple[Decision, Outcome]] = []
        self._since = 0.0
        self._made: set[pathlib.Path] = set()  # folders of records and locks made so far
        self._synced: set[pathlib.Path] = set()  # of those, ones whose parent was synced
        self._pool: ThreadPoolExecutor | None = None  # fsync threads, kept until `close`
        self._thread: ThreadPoolExecutor | None = None  # runs `flush_in_background`
        self._flushing: Future[None] | None = None  # the batch flushed there now
        self._handed: list[tuple[Decision, Outcome]] | None = None  # that batch

    def add(self, decision: Decision, outcome: Outcome) -> None:
        """Queue a stage that ran to completion (its run key set)."""
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append((decision, outcome))

    def wait_at_most(self) -> float | None:
        """Seconds until the oldest queued stage is due (None: nothing queued, or a flush
        is in progress: wait for it too, see `flushing`)."""
        if not self._pending or self._flushing is not None:
            return None
        return max(0.0, self._since + WINDOW - time.monotonic())

    def due(self) -> bool:
        """Whether the queued stages should be flushed now (not while a flush runs)."""
        return (
            bool(self._pending)
            and self._flushing is None
            and (len(self._pending) >= MAX_BATCH or time.monotonic() - self._since >= WINDOW)
        )

    def flushing(self) -> list[Future[None]]:
        """The background flush in progress, if any: the scheduler waits for it alongside
        its stages, so that the next due batch is not left waiting for a stage to end."""
        return [self._flushing] if self._flushing is not None else []

    def check(self) -> None:
        """Take the result of a background flush that has finished: raises its error."""
        if self._flushing is not None and self._flushing.done():
            future, self._flushing = self._flushing, None
            future.result()

    def flush_in_background(self) -> None:
        """Start recording every queued stage on the recorder's thread (see `flush`)."""
        self.check()
        if self._flushing is not None or not self._pending:
            return
        from concurrent.futures import Future, ThreadPoolExecutor

        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="pivot-record")
        # A Ctrl-C may land between any two of these lines: the batch stays reachable
        # (`_pending`, then `_handed`), and `flush` takes it back if the thread never began.
        pending = self._pending
        future: Future[None] = Future()
        self._handed = pending
        self._flushing = future
        self._pending = []
        self._thread.submit(self._flush_handed, future, pending)

    def _flush_handed(self, future: Future[None], pending: list[tuple[Decision, Outcome]]) -> None:
        """`_flush` on the recorder's thread, unless `flush` took the batch back first."""
        if not future.set_running_or_notify_cancel():
            return
        try:
            self._flush(pending)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)

    def flush(self) -> None:
        """Record every queued stage (after the background flush in progress, whose error
        it raises, discarding what is queued): blobs, run records and locks made durable,
        then renamed into place in that order."""
        if self._flushing is not None:
            future, handed = self._flushing, self._handed
            self._flushing = self._handed = None
            if future.cancel():  # the thread never began it: flushed here
                if self._pending is not handed:
                    self._pending = handed + self._pending
            else:
                try:
                    future.result()
                except BaseException:
                    pending, self._pending = self._pending, []
                    for _, outcome in pending:
                        discard(outcome)
                    raise
        pending, self._pending = self._pending, []
        self._flush(pending)

    def _flush(self, pending: list[tuple[Decision, Outcome]]) -> None:
        if not pending:
            return
        stages_dir = self.ws.project.stages_dir
        temps: list[tuple[str, pathlib.Path]] = []  # (temp file, its final path)
        try:
            with self.ws.cache.batch() as batch:
                for _, outcome in pending:
                    for digest, tmp in outcome.staged:
                        batch.adopt(tmp, digest)
                    outcome.staged = []
                for decision, outcome in pending:
                    assert decision.run_key is not None
                    path = self.ws.runs.path(decision.run_key)
                    data = encode_record(outcome.outs)
                    temps.append((_fs.write_temp(path, data, self._made), path))
                later = []
                for decision, outcome in pending:
                    if reads_cache(decision.stage):
                        later.append((decision, outcome))
                        continue
                    temps.append(self._lock_temp(stages_dir, decision, outcome))
                batch.commit(sync_also=[tmp for tmp, _ in temps], pool=self._fsyncs())
            self._publish(temps)
            if later:  # their metric values are read from the blobs published above
                temps = [self._lock_temp(stages_dir, d, o) for d, o in later]
                with self.ws.cache.batch() as batch:
                    batch.commit(sync_also=[tmp for tmp, _ in temps], pool=self._fsyncs())
                self._publish(temps)
        except BaseException as exc:
            for _, outcome in pending:
                discard(outcome)
            for tmp, _ in temps:
                _fs.remove_quietly(tmp)
            stages = ", ".join(decision.stage.id for decision, _ in pending)
            blocked = in_the_way(exc, self.ws.project.pivot_dir, f"recording {stages}")
            if blocked is not None:
                raise blocked from exc
            raise

    def _publish(self, temps: list[tuple[str, pathlib.Path]]) -> None:
        """Rename the durable temp files into place, then fsync each folder renamed into
        once (and, the first time this recorder renames into a folder, the folder holding
        it: it may have just been created)."""
        folders = {path.parent for _, path in temps}
        _publish(temps)
        fresh = folders - self._synced
        self._synced |= fresh
        _fs.sync_folders([*folders, *(folder.parent for folder in fresh)], self._fsyncs())

    def _fsyncs(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(FSYNC_WORKERS, thread_name_prefix="pivot-fsync")
        return self._pool

    def close(self) -> None:
        """Stop the recorder's threads (call once nothing more is flushed: before a fork).
        A background flush still in progress (the run is failing already: `flush` was not
        reached) is waited for, its error left to its own cleanup."""
        if self._flushing is not None:
            future, self._flushing = self._flushing, None
            with contextlib.suppress(BaseException):
                future.result()
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _lock_temp(
        self, stages_dir: pathlib.Path, decision: Decision, outcome: Outcome
    ) -> tuple[str, pathlib.Path]:
        lock = self._new_lock(decision, outcome.outs)
        path = lock_path(stages_dir, lock.stage_id)
        return _fs.write_temp(path, lock.to_json().encode(), self._made), path


def _publish(temps: list[tuple[str, pathlib.Path]]) -> None:
    """Rename each durable temp file over its final path, in order (a renamed one is
    dropped from `temps`, so that a failure leaves only the others to remove)."""
    while temps:
        tmp, path = temps[0]
        os.replace(tmp, path)
        temps.pop(0)


def discard(outcome: Outcome) -> None:
    """Remove the staged blobs of a stage that is not recorded (it failed or was stopped)."""
    for _, tmp in outcome.staged:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    outcome.staged = []
