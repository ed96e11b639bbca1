"""The local executor: a pool of forked worker processes, each handing every stage to a
fresh child of its own that loads deps, calls the function, saves outs and caches them."""

from __future__ import annotations

import contextlib
import os
import pathlib
import struct
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot import _racy
from pivot.cache.batch import SYNCFS_MIN
from pivot.cache.checkout import remove_leftovers
from pivot.cache.hashing import FILE
from pivot.cache.objects import LocalCache, StoredOutput
from pivot.cache.state import settle, settled_limit, stat_row
from pivot.define.metric_values import read_metrics_file
from pivot.define.stage import LIST, MATCH
from pivot.discover.loading import pipeline_context
from pivot.errors import DiskFull, NotWritable, PivotError, not_writable
from pivot.project import Project
from pivot.run.executor import Outcome

if TYPE_CHECKING:
    import concurrent.futures as cf
    from collections.abc import Callable

    from pivot.cache.batch import CacheBatch
    from pivot.cache.snapshot import Snapshot
    from pivot.cache.state import Row
    from pivot.define.stage import Artifact, StageSpec
    from pivot.run.plan import Decision

PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parents[1]) + os.sep  # all of pivot/
_STAGES: dict[str, StageSpec] = {}
_DECLARED: set[str] = set()  # every output of the run, and the folders they lie in
_NEXT: dict[str, str] = {}  # a stage -> the first stage that reads one of its outputs
# An output file this large, changed in the racy marker's tick, is read after a marker past
# that tick (a wait of at most a tick) rather than left for the next command to hash again.
SETTLE_WAIT_MIN = 8 << 20
CANCEL_GRACE = 2.0  # seconds a cancelled stage gets to stop on Ctrl-C before SIGKILL


def register_stages(stages: dict[str, StageSpec]) -> None:
    """Make stages known to workers; call before the worker processes are forked."""
    _STAGES.clear()
    _STAGES.update(stages)
    _DECLARED.clear()
    _NEXT.clear()
    made: dict[str, str] = {}
    for stage in stages.values():
        for out in stage.outs:
            made[out.path] = stage.id
            _DECLARED.add(out.path)
            _DECLARED.update(p.as_posix() for p in pathlib.PurePosixPath(out.path).parents)
    for stage in stages.values():
        for dep in stage.deps:
            if dep.path in made:
                _NEXT.setdefault(made[dep.path], stage.id)


class WorkerLost(Exception):
    """A worker process died (killed, out of memory): the executor can run nothing more."""


@dataclass
class _Worker:
    """The main process's end of one worker: it writes stage ids to `requests` and reads
    each stage's pickled `Outcome` from `results`, one length-prefixed frame each."""

    pid: int
    requests: int
    results: int
    future: cf.Future[Outcome] | None = None  # the stage it runs
    received: bytearray = field(default_factory=bytearray)  # the start of the next frame


class LocalExecutor:
    """`workers` forked worker processes on this machine (see `Executor`).

    Created before the command starts any thread (remote clients do): the workers are
    forked at once, with Ctrl-C blocked until their initializer has run. Each worker
    takes one stage at a time over a pipe and forks a fresh child for it (`execute`);
    one thread of this process reads the outcomes and resolves the futures."""

    def __init__(self, stages: dict[str, StageSpec], workers: int, project: Project) -> None:
        import signal
        import threading

        register_stages(stages)
        self._stages = stages
        paths = (str(project.root), str(project.cache_dir), str(project.tmp_dir))
        # Workers name the process running each stage here (`_announce`), for `cancel`.
        self._started, started = os.pipe()
        os.set_blocking(self._started, False)
        os.set_blocking(started, False)
        self._pids: dict[str, int] = {}
        self._unread = b""
        self._pids_lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._backlog: list[tuple[cf.Future[Outcome], str]] = []  # submitted, no worker free
        self._state = threading.Lock()  # guards the workers' futures and the backlog
        self._broken = False
        self._closing = False
        # The workers start with Ctrl-C blocked, kept blocked by their initializer: one
        # that lands before it ran cannot raise there.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for _ in range(workers):
                self._workers.append(self._fork_worker(started, paths))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(started)
        self._reader = threading.Thread(
            target=self._read_outcomes, name="pivot-outcomes", daemon=True
        )
        self._reader.start()
        self._submitted: dict[cf.Future[Outcome], str] = {}
        self._signalled: set[int] = set()
        self._handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self._on_signal)

    def _fork_worker(self, started: int, paths: tuple[str, str, str]) -> _Worker:
        parent = os.getpid()
        requests_read, requests_write = os.pipe()
        results_read, results_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            # Only its own pipes: a worker holding another's request pipe would keep that
            # one from seeing the pipe close at `shutdown`.
            for fd in (self._started, requests_write, results_read):
                os.close(fd)
            for other in self._workers:
                os.close(other.requests)
                os.close(other.results)
            serve(parent, started, requests_read, results_write, paths)
        os.close(requests_read)
        os.close(results_write)
        return _Worker(pid, requests_write, results_read)

    def submit(self, decision: Decision) -> cf.Future[Outcome]:
        import concurrent.futures as cf

        future: cf.Future[Outcome] = cf.Future()
        stage_id = decision.stage.id
        self._submitted[future] = stage_id
        with self._state:
            if self._broken:
                future.set_exception(WorkerLost())
                return future
            idle = next((w for w in self._workers if w.future is None), None)
            if idle is None:
                self._backlog.append((future, stage_id))
                return future
            idle.future = future
        _send_request(idle, stage_id)
        return future

    def _read_outcomes(self) -> None:
        """The reader thread: resolve each worker's future as its outcome arrives; a worker
        whose pipe closed before it answered died, which breaks the executor."""
        import pickle
        import select

        live = {w.results: w for w in self._workers}
        poller = select.poll()
        for fd in live:
            poller.register(fd, select.POLLIN)
        while live:
            for fd, _ in poller.poll():
                worker = live[fd]
                data = os.read(fd, 1 << 16)
                if not data:
                    poller.unregister(fd)
                    del live[fd]
                    self._lost(worker)
                    continue
                worker.received += data
                while (frame := _take_frame(worker)) is not None:
                    with self._state:  # `shutdown` closes the request pipes under it
                        future, worker.future = worker.future, None
                        if self._backlog and not self._closing:
                            worker.future, queued = self._backlog.pop(0)
                            _send_request(worker, queued)
                    if future is None:
                        continue
                    try:
                        future.set_result(pickle.loads(frame))
                    except Exception as exc:  # raised by `outcome`, as a pool's future does
                        future.set_exception(exc)

    def _lost(self, worker: _Worker) -> None:
        """A worker's pipe closed: at `shutdown`, as asked; else it died, and, as a broken
        pool, the executor stops the other workers (each kills its stage's process group)
        and fails every stage submitted."""
        import signal

        with self._state:
            failed = [worker.future] if worker.future is not None else []
            worker.future = None
            if not self._closing and not self._broken:
                self._broken = True
                for other in self._workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other.pid, signal.SIGTERM)
            failed += [future for future, _ in self._backlog]
            self._backlog.clear()
        for future in failed:
            if not future.done():
                future.set_exception(WorkerLost())

    def outcome(self, future: cf.Future[Outcome], stage_id: str) -> Outcome:
        self._read_started()
        with self._pids_lock:
            self._pids.pop(stage_id, None)
        self._submitted.pop(future, None)
        try:
            return future.result()
        except WorkerLost:
            stage = self._stages[stage_id]
            return Outcome(
                stage_id,
                False,
                error=(
                    f"Stage {stage_id} ({stage.source}) did not finish: the worker process "
                    f"running it died (killed, out of memory, or os._exit). Stages still "
                    f"running were stopped; run again to continue."
                ),
                executor_lost=True,
            )

    def cancel(self, future: cf.Future[Outcome], stage_id: str) -> None:
        """Ctrl-C (KeyboardInterrupt) in the process group running the stage (the stage and
        the processes it started), SIGKILL if it has not stopped `CANCEL_GRACE` seconds
        later; waits for its worker to hand it over."""
        import concurrent.futures as cf
        import select
        import signal

        pid = None
        while pid is None and not future.done():
            self._read_started()
            with self._pids_lock:
                pid = self._pids.get(stage_id)
            if pid is None:
                select.select([self._started], [], [], 0.05)
        for sig in (signal.SIGINT, signal.SIGKILL):
            # The child is reaped only after its future resolved: until then its pid is
            # its own.
            if pid is None or future.done():
                return
            self._signalled.add(pid)  # what it started is killed at `shutdown`
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            cf.wait([future], timeout=CANCEL_GRACE)

    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGINT or SIGTERM of this process (a Ctrl-C, a `kill`): Ctrl-C goes on to the
        process group of every running stage (each has its own, see `_fork_spare`, so the
        terminal's Ctrl-C reaches it only through here), SIGTERM kills them; then the
        signal does what it did before."""
        import signal

        previous = self._handlers.get(signum)
        if previous == signal.SIG_IGN:
            return
        self._signal_stages(signal.SIGINT if signum == signal.SIGINT else signal.SIGKILL)
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT and previous is None:
            raise KeyboardInterrupt
        else:  # the default action: die of the signal, as without this handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _signal_stages(self, sig: int) -> None:
        """Send `sig` to the process group of every stage that has not reported (Ctrl-C
        once each, with SIGCONT: a stage stopped for reading the terminal, whose
        foreground group is not its own, then sees it)."""
        import signal

        if self._pids_lock.acquire(blocking=False):  # not if interrupted while reading
            self._pids_lock.release()
            self._read_started()
        for pid in list(self._pids.values()):
            if sig != signal.SIGINT or pid not in self._signalled:
                self._signalled.add(pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
                    if sig == signal.SIGINT:
                        os.killpg(pid, signal.SIGCONT)

    def _read_started(self) -> None:
        """Take in the (pid, stage) records the workers wrote."""
        with self._pids_lock:
            while True:
                try:
                    data = os.read(self._started, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self._unread += data
            *lines, self._unread = self._unread.split(b"\n")
            for line in lines:
                pid, _, stage_id = line.decode().partition(" ")
                self._pids[stage_id] = int(pid)

    def shutdown(self) -> None:
        """Stop the stages still running (a Ctrl-C or an error stopped the run): Ctrl-C in
        their process groups, SIGKILL `CANCEL_GRACE` seconds later (at once for what is left
        in the group of a stage that already stopped: a process that ignores Ctrl-C); then
        release the workers (their request pipes close: each exits once its stage is done)
        and give back the signal handlers."""
        import concurrent.futures as cf
        import signal

        running = [f for f in self._submitted if not f.done()]
        if running:
            self._signal_stages(signal.SIGINT)
            cf.wait(running, timeout=CANCEL_GRACE)
        for pid in self._signalled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with self._state:
            self._closing = True
            for future, _ in self._backlog:
                future.cancel()
            self._backlog.clear()
            for worker in self._workers:
                os.close(worker.requests)
        for worker in self._workers:
            os.waitpid(worker.pid, 0)
        self._reader.join()
        for worker in self._workers:
            os.close(worker.results)
        os.close(self._started)
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers.clear()


def _send_request(worker: _Worker, stage_id: str) -> None:
    """Hand a stage to a worker; one that died already fails it when its pipe closes."""
    with contextlib.suppress(BrokenPipeError):
        _write_frame(worker.requests, stage_id.encode())


_FRAME = struct.Struct("!I")  # the length of the frame's payload


def _write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_FRAME.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def _take_frame(worker: _Worker) -> bytes | None:
    """The next whole frame received from `worker`, if one is there."""
    if len(worker.received) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack_from(worker.received)
    end = _FRAME.size + size
    if len(worker.received) < end:
        return None
    frame = bytes(worker.received[_FRAME.size : end])
    del worker.received[:end]
    return frame


def _read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes from `fd`; None if it closed first."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(parent: int, announce: int, requests: int, results: int, paths: tuple[str, ...]) -> None:
    """A worker's life: run each stage named on `requests` (`execute`) and write its
    pickled outcome to `results`, until `requests` closes (or the main process dies);
    then let the spare child go, reap every child and exit. Never returns."""

    global _worker_pipes
    code = 0
    stage_id: str | None = None  # the stage this worker runs now
    try:
        _worker_pipes = (requests, results)
        if sys.stdin is not None:  # a stage's `input()` reads end of file, not the terminal
            with contextlib.suppress(OSError, ValueError):
                sys.stdin.close()
                sys.stdin = open(os.devnull)  # noqa: SIM115 (the process's stdin)
        init_worker(parent, announce)
        while (header := _read_exactly(requests, _FRAME.size)) is not None:
            request = _read_exactly(requests, _FRAME.unpack(header)[0])
            if request is None:
                break
            stage_id = request.decode()
            _write_frame(results, execute(stage_id, *paths))
            stage_id = None
    except BaseException as exc:
        code = 1
        _report_crash(results, stage_id, exc)
    finally:
        try:
            _release_children()
        finally:
            os._exit(code)


def _report_crash(results: int, stage_id: str | None, exc: BaseException) -> None:
    """An error of the worker itself (a bug in Pivot, not in a stage): fail the stage it
    was running with the traceback (the main process then stops the run, as for a worker
    that died); logged when no stage was running or the main process cannot be told."""
    import logging

    text = "".join(traceback.format_exception(exc)).rstrip()
    if stage_id is not None and stage_id in _STAGES:
        stage = _STAGES[stage_id]
        error = (
            f"Stage {stage_id} ({stage.source}) did not finish: the worker process running "
            f"it failed (an error in Pivot, please report it):\n{text}"
        )
        with contextlib.suppress(Exception):
            _write_frame(
                results, _pickled(Outcome(stage_id, False, error=error, executor_lost=True))
            )
            return
    with contextlib.suppress(Exception):
        logging.getLogger(__name__).error(f"A Pivot worker process failed:\n{text}")


class StageContractError(Exception):
    """The stage ran but broke its declared contract (missing output, bad return);
    `cause` is the Pivot error that says how, if one did."""

    def __init__(self, message: str, cause: PivotError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class OutputNotSaved(Exception):
    """The loader of an output could not save the value the stage returned for it (the
    cause is chained)."""

    def __init__(self, out: Artifact) -> None:
        super().__init__(out.declared)
        self.out = out


@dataclass
class _Spare:
    """A child forked ahead of time, waiting for the stage it will run."""

    pid: int
    request: int  # write end: the pickled (stage_id, root, cache_dir, tmp_dir)
    result: int  # read end: the pickled Outcome


_spare: _Spare | None = None
_unreaped: list[int] = []
_worker_pipes: tuple[int, ...] = ()  # this worker's request and result pipes
_announce_fd: int | None = None  # where this worker names the process of each stage
_running: int | None = None  # the child running a stage now (its process group's id)
_prctl: Any = None  # libc's prctl, for `die_with_parent`


def init_worker(parent: int, announce: int | None = None) -> None:
    """A worker's setup: die with the main process `parent`, and leave Ctrl-C to the main
    process and the stage children (each sets its own handler); a worker that raised
    mid-hand-over would lose track of its child.

    The worker blocks SIGINT (it is forked with SIGINT already blocked, see
    `LocalExecutor`) rather than ignoring it: one that reached the process group
    stays pending here, so that a stage handed over later, to a child forked after that
    Ctrl-C, is not run (see `_hand_over`).

    When `parent` dies (even of SIGKILL) the worker gets SIGTERM and kills the process
    group of the stage it runs, so that the processes the stage started die too."""
    import signal

    global _announce_fd
    _announce_fd = announce
    signal.signal(signal.SIGTERM, _stop_stage_and_exit)
    die_with_parent(parent, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def die_with_parent(parent: int, sig: int | None = None) -> None:
    """Have the kernel send `sig` (default SIGKILL) to this process when `parent` (the
    process that forked it) dies, so that a killed `pivot run` leaves no worker or stage
    running; exit at once if it is already gone. Linux only (prctl); elsewhere a worker
    lives until its request pipe closes."""
    import ctypes
    import signal

    global _prctl
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    if _prctl is None:  # looked up once per worker, inherited by the stages' children
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl(pr_set_pdeathsig, signal.SIGKILL if sig is None else sig, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _stop_stage_and_exit(signum: int, frame: Any) -> None:
    """A worker's SIGTERM (its main process died, or another worker did): SIGKILL the
    process group of the stage it runs, then exit."""
    import signal

    if _running is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(_running, signal.SIGKILL)
    os._exit(1)


class _Interrupted(Exception):
    """Ctrl-C reached this worker before the stage's child was forked."""


def _ctrl_c_pending() -> bool:
    import signal

    return signal.SIGINT in signal.sigpending()


def execute(stage_id: str, root: str, cache_dir: str, tmp_dir: str) -> bytes:
    """Run one stage in a fresh child forked from this worker, so that no global state
    (module settings, environment, RNG seeds) leaks from one stage into the next and a
    stage that kills its process fails alone.

    A fork and a process exit cost ~1 ms each on a VM; neither is on a chain's critical
    path: the stage goes to a spare child forked while the previous stage ran, the next
    spare is forked while this one runs, and a child that sent its outcome is reaped later.
    A spare that died before it took the request (killed while it waited: its death may
    not show yet when the request is written) is replaced by a fresh child; one that took
    it and died (also while writing its outcome: the outcome is length-prefixed) fails the
    stage. Returns the pickled `Outcome`: the child's bytes are passed on as they came.
    """
    import pickle

    global _spare, _running
    _reap(block=False)
    request = pickle.dumps((stage_id, root, cache_dir, tmp_dir), pickle.HIGHEST_PROTOCOL)
    child = _spare if _spare is not None and _waiting(_spare) else None
    _spare = None
    fresh = child is None
    while True:
        try:
            if child is None or not _hand_over(child, request):
                fresh = True
                child = _fork_spare()  # no spare yet, or it died: a fresh child takes it
                if not _hand_over(child, request):
                    return _pickled(_failed(stage_id, "could not start: its process died at once"))
        except OSError as exc:  # no process could be forked (a limit was reached)
            reason = f"could not start: no process could be forked ({exc})"
            return _pickled(_failed(stage_id, reason))
        except _Interrupted:
            return _pickled(_interrupted(stage_id))
        _running = child.pid
        with os.fdopen(child.result, "rb") as pipe:
            taken = pipe.read(1) == _TAKEN
            if taken:  # announced only now: a spare that died unseen has no stage to cancel
                _announce(stage_id, child.pid)
                if _spare is None:
                    try:
                        _spare = _fork_spare((_NEXT.get(stage_id), root, cache_dir, tmp_dir))
                    except OSError:  # the next stage forks its own
                        _spare = None
            data = pipe.read() if taken else b""
        _running = None
        if len(data) > 8 and int.from_bytes(data[:8], "little") == len(data) - 8:
            _unreaped.append(child.pid)
            return data[8:]
        _, status = os.waitpid(child.pid, 0)
        if _ctrl_c_pending():  # Ctrl-C stopped the child before it read its request
            return _pickled(_interrupted(stage_id))
        if taken or fresh:  # it died in the stage, or while writing its outcome
            break
        child = None  # the spare died before it took the request: the stage never began
    return _pickled(
        _failed(
            stage_id,
            f"did not finish: its process died ({_describe_exit(status)}), e.g. killed, "
            f"out of memory, or os._exit()",
        )
    )


def _announce(stage_id: str, pid: int) -> None:
    """Tell the main process which child runs the stage (one atomic pipe write); if the
    pipe is full, the stage cannot be cancelled, only waited for."""
    if _announce_fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(_announce_fd, f"{pid} {stage_id}\n".encode())


def _failed(stage_id: str, what: str) -> Outcome:
    stage = _STAGES[stage_id]
    return Outcome(stage_id, False, error=f"Stage {stage_id} ({stage.source}) {what}.")


def _pickled(outcome: Outcome) -> bytes:
    import pickle

    return pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)


def _interrupted(stage_id: str) -> Outcome:
    return Outcome(stage_id, False, error=f"Stage {stage_id} was interrupted.", interrupted=True)


def _hand_over(child: _Spare, request: bytes) -> bool:
    """`_send`, unless Ctrl-C reached this worker: it may have come before `child` was
    forked, so that the child never saw it; the child is let go, the stage not run
    (raises _Interrupted). A Ctrl-C after the child's fork reaches the child itself."""
    if _ctrl_c_pending():
        os.close(child.request)
        os.close(child.result)
        _unreaped.append(child.pid)
        raise _Interrupted
    return _send(child, request)


def _send(child: _Spare, request: bytes) -> bool:
    """Hand `request` to a waiting child; False (its pipes closed, it reaped) if it is
    gone."""
    try:
        with os.fdopen(child.request, "wb") as pipe:
            pipe.write(request)
    except BrokenPipeError:
        os.close(child.result)
        os.waitpid(child.pid, 0)
        return False
    return True


def _release_children() -> None:
    """Let the spare go (its request pipe closes) and reap every child."""
    global _spare
    if _spare is not None:
        os.close(_spare.request)
        os.close(_spare.result)
        _unreaped.append(_spare.pid)
        _spare = None
    _reap(block=True)


def _reap(block: bool) -> None:
    """Collect the exit status of children that already sent their outcome."""
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # already collected
            done = pid
        if done:
            _unreaped.remove(pid)


def _waiting(spare: _Spare) -> bool:
    """Whether the spare still waits for its request (it exits if something killed it)."""
    pid, _ = os.waitpid(spare.pid, os.WNOHANG)
    if pid == 0:
        return True
    os.close(spare.request)
    os.close(spare.result)
    return False


# The byte a child writes on its result pipe once it has read its stage request.
_TAKEN = b"+"


def _fork_spare(expected: tuple[str | None, str, str, str] | None = None) -> _Spare:
    """Fork a child that waits for one stage request, runs it, sends the outcome, exits.

    Without a request (its worker exited: the pipe closes) or on Ctrl-C while it waits, it
    exits at once. With `expected` (the stage likely to come next, and the project's root,
    cache and tmp folders), it first does what needs none of that stage's deps
    (`_prepare`), unless its request is already there.
    """
    import pickle
    import select
    import signal

    request_read, request_write = os.pipe()
    result_read, result_write = os.pipe()
    # Forked with SIGINT blocked, unblocked once the child's handler is set: a Ctrl-C that
    # lands in between is delivered to the child then, not ignored or run by this
    # process's handler.
    worker = os.getpid()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (request_read, request_write, result_read, result_write):
            os.close(fd)
        raise
    if pid == 0:  # the child: never returns
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the worker's handler
            # A process group of its own: pivot stops the stage and what it started as one.
            os.setpgid(0, 0)
            die_with_parent(worker)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            os.close(request_write)
            os.close(result_read)
            for fd in _worker_pipes:  # the stage holds no pipe of its worker's
                os.close(fd)
            if expected is not None:
                _prepare(*expected, lambda: bool(select.select([request_read], [], [], 0)[0]))
            with os.fdopen(request_read, "rb") as pipe:
                data = pipe.read()
            if data:
                os.write(result_write, _TAKEN)  # from here on, the stage has begun
                stage_id, root, cache_dir, tmp_dir = pickle.loads(data)
                outcome = execute_here(
                    stage_id, pathlib.Path(root), cache_dir, tmp_dir, hand_over=True, exits=True
                )
                payload = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
                with os.fdopen(result_write, "wb") as pipe:
                    pipe.write(len(payload).to_bytes(8, "little") + payload)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    with contextlib.suppress(OSError):  # also here: the group exists once fork returns
        os.setpgid(pid, pid)
    os.close(request_read)
    os.close(result_write)
    return _Spare(pid, request_write, result_read)


def _prepare(
    stage_id: str | None, root: str, cache_dir: str, tmp_dir: str, arrived: Callable[[], bool]
) -> None:
    """In a spare child, while the stage before runs: the first steps of `execute_here`
    that write no file and need no dep, done once for nothing (the cache and project
    objects, the outcome's pickling; for `stage_id`, the stage expected next, the listing
    of its folders, the checks of its output paths, its deps' paths), so that most of the
    pages a stage's child writes (reference counts: each first write copies a page it
    shares with its worker) are copied here, off a chain's critical path, not after its
    request. It stops at the first step that finds the request `arrived` (the stage then
    waits at most for the step in progress). Whatever stage then comes runs in full, as in
    any child; a failure here is left for that run to meet."""
    import pickle

    with contextlib.suppress(Exception):
        if arrived():
            return
        folder = pathlib.Path(root)
        LocalCache(pathlib.Path(cache_dir), pathlib.Path(tmp_dir)).batch()
        project = Project(folder)
        pickle.dumps(Outcome("", True, {}, [], seconds=0.0, undeclared=[], staged=[]))
        stage = _STAGES.get(stage_id) if stage_id is not None else None
        if stage is None or arrived():
            return
        _entries(stage, folder)
        if arrived():
            return
        for out in stage.outs:
            project.write_path(out.path, "its output")  # checks only: no folder is made
        for dep in stage.deps:
            _local(folder, stage, dep.path)


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def execute_here(
    stage_id: str,
    root: pathlib.Path,
    cache_dir: str,
    tmp_dir: str,
    hand_over: bool = False,
    exits: bool = False,
) -> Outcome:
    """Call the stage (registered by `register_stages`) in its pipeline directory, in this
    process, and move its outputs into the cache. With `exits` (a stage's child, which
    exits once it has reported), the directory and `sys.path` are left as the stage ran.

    With `hand_over`, the blobs of the stage's file outputs (fewer than `SYNCFS_MIN`) are
    left staged (temp files named in `Outcome.staged`) for the scheduler to commit with
    other stages' in one flush; a directory output is committed here, as it is stored."""
    import time

    stage = _STAGES[stage_id]
    start = time.perf_counter()
    try:
        cache = LocalCache(pathlib.Path(cache_dir), pathlib.Path(tmp_dir))
        project = Project(root)
        before = _entries(stage, root)
        for out in stage.outs:
            try:
                target = project.write_path(out.path, "its output", make_parents=True)
                project.remove_output(out.path, "its output")  # never through a swapped link
                with project.pinned_folder(out.path, "its output") as folder:
                    remove_leftovers(cache, folder / target.name)
            except PivotError as exc:
                raise StageContractError(f"cannot run: {exc}", exc) from None
        with contextlib.nullcontext() if exits else pipeline_context(stage.workdir, root):
            if exits:
                _enter_stage_dir(stage, root)
            result = _call(stage, root)
            os.chdir(stage.workdir)  # the stage may have changed directory
            _save_outputs(stage, result, root)
        # Made once the outputs are written, before they are read: what their reading
        # stats judges, for a directory output's snapshot (`snapshot.of_stored`) and for
        # the stat-cache rows (`Outcome.stats`; a file of the marker's tick is smudged).
        # Outputs that are all files: no wait for the clock's tick (see `_store_outputs`).
        wall_ns = time.time_ns()
        if any(os.path.isdir(root / out.path) for out in stage.outs):
            made = _racy.made_after_writes(tmp_dir)
        else:
            made = _racy.made_after_writes(tmp_dir, 0)
        snapshots: dict[str, Snapshot] = {}
        batch = cache.batch()
        try:
            try:
                outs, stats = _store_outputs(
                    stage, root, cache, batch, snapshots, (made, wall_ns, tmp_dir)
                )
            except (DiskFull, NotWritable):
                raise
            except PivotError as exc:
                raise StageContractError(
                    f"wrote an output Pivot cannot store: {exc}", exc
                ) from None
            undeclared = sorted(_entries(stage, root) - before)
            staged = batch.hand_over() if hand_over and len(batch) < SYNCFS_MIN else []
            batch.commit()
        except BaseException as exc:
            batch.discard()
            refused = not_writable(exc)  # the cache's folders, not the stage's doing
            if refused is not None:
                raise refused from None
            raise
    except BaseException as exc:
        seconds = time.perf_counter() - start
        error = _format_error(stage, exc)
        # Pivot's own errors keep their class, data and advice; the stage's are its traceback.
        cause = exc.cause if isinstance(exc, StageContractError) else None
        interrupted = isinstance(exc, KeyboardInterrupt)
        return Outcome(
            stage_id,
            False,
            error=error,
            cause=exc if isinstance(exc, DiskFull | NotWritable) else cause,
            seconds=seconds,
            interrupted=interrupted,
        )
    seconds = time.perf_counter() - start
    return Outcome(
        stage_id,
        True,
        outs,
        stats,
        seconds=seconds,
        undeclared=undeclared,
        staged=staged,
        snapshots=snapshots,
    )


def _enter_stage_dir(stage: StageSpec, root: pathlib.Path) -> None:
    """Run the stage as its pipeline file was loaded (`pipeline_context`): in its directory,
    with it, then the project root, first on `sys.path`; for a process that exits after the
    stage, so nothing is restored (`pipeline_context`'s set of every loaded module's name
    costs a forked child the pages it touches)."""

    os.chdir(stage.workdir)
    sys.path[:0] = list(dict.fromkeys([str(stage.workdir), str(root)]))


def _entries(stage: StageSpec, root: pathlib.Path) -> set[str]:
    """The project paths of the entries of the stage's directory and of the folders of its
    outputs, but for what any stage of the run declares (outputs and their folders) and
    hidden or `__pycache__` entries (temp files of the stages running alongside).

    Comparing this before and after the stage finds the files it wrote without declaring
    them, cheaply: deeper folders, and files it changed rather than created, are not seen.
    """
    top = os.path.relpath(stage.workdir, root).replace(os.sep, "/")
    folders = {top} | {out.path.rpartition("/")[0] or "." for out in stage.outs}
    found = set()
    for rel in folders:
        if rel == ".." or rel.startswith("../"):
            continue
        try:
            names = os.listdir(os.path.join(root, rel))
        except OSError:
            continue
        prefix = "" if rel == "." else f"{rel}/"
        for name in names:
            if name.startswith(".") or name == "__pycache__":
                continue
            path = prefix + name
            if path not in _DECLARED:
                found.add(path)
    return found


def _local(root: pathlib.Path, stage: StageSpec, rel: str) -> pathlib.Path:
    """The tracked project path `rel`, spelled relative to the stage's directory."""
    return pathlib.Path(os.path.relpath(root / rel, stage.workdir))


def _call(stage: StageSpec, root: pathlib.Path) -> Any:
    kwargs: dict[str, Any] = {}
    for dep in stage.deps:
        local = _local(root, stage, dep.path)
        value = dep.loader.load(local)
        if dep.group == LIST:
            kwargs.setdefault(dep.key, []).append(value)
        elif dep.group == MATCH:
            kwargs.setdefault(dep.key, {})[local.as_posix()] = value
        else:
            kwargs[dep.key] = value
    if stage.outs_as_args:
        kwargs.update({out.key: _local(root, stage, out.path) for out in stage.outs})
    if stage.params is not None:
        kwargs["params"] = stage.params
    return stage.func(**kwargs)


def _save_outputs(stage: StageSpec, result: Any, root: pathlib.Path) -> None:
    if stage.outs_as_args:
        values = {}  # the function wrote its outs at the paths it was given
    elif stage.single_out:
        values = {stage.outs[0].key: result}
    elif stage.outs:
        if not isinstance(result, dict):
            raise StageContractError(
                f"returned {type(result).__name__}, but its return type declares outputs "
                f"{', '.join(o.key for o in stage.outs)}; return a dict with those keys."
            )
        missing = [o.key for o in stage.outs if o.key not in result]
        if missing:
            raise StageContractError(f"returned no value for output(s) {', '.join(missing)}.")
        values = result
    else:
        values = {}
    for out in stage.outs:
        if not out.loader.writes_itself:
            try:
                out.loader.save(values[out.key], _local(root, stage, out.path))
            except Exception as exc:
                raise OutputNotSaved(out) from exc
    absent = [o.declared for o in stage.outs if not os.path.lexists(root / o.path)]
    if absent:
        raise StageContractError(
            f"did not write its declared output(s) {', '.join(absent)} (relative to "
            f"{stage.workdir}). Write the file(s) or fix the pivot.Out path."
        )
    # Only a pipeline that declares a pivot.Metric imports the module that defines it.
    results = sys.modules.get("pivot.define.results")
    for out in stage.outs:
        if results is not None and isinstance(out.mark, results.Metric):
            try:
                read_metrics_file(root / out.path, out.path)
            except IsADirectoryError:
                raise StageContractError(
                    f"wrote a folder at its metrics file {out.declared}; write a file."
                ) from None
            except PivotError as exc:
                raise StageContractError(f"wrote a metrics file Pivot cannot read: {exc}") from None


def _store_outputs(
    stage: StageSpec,
    root: pathlib.Path,
    cache: LocalCache,
    batch: CacheBatch,
    snapshots: dict[str, Snapshot],
    marked: tuple[tuple[int, int] | None, int, str],
) -> tuple[dict[str, dict[str, Any]], list[Row]]:
    """Store each output: a file staged in `batch`, a directory committed at once (its
    snapshot put in `snapshots` when the racy marker settles every file). `marked` is
    that marker (made after the stage returned, before any output is read), the wall
    clock's time taken before it and its folder. Returns the outputs and the stat-cache
    rows of their files (`Outcome.stats`), those not settled by the marker smudged (a
    file of at least `SETTLE_WAIT_MIN` bytes is read after a marker past its tick:
    `_racy.made_after_writes`, rather than hashed again by the next command)."""
    made, wall_ns, tmp_dir = marked
    outs: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    for out in stage.outs:
        path = root / out.path
        if path.is_dir():
            stored, found = cache.add_output(path, root, snapshots=snapshots, made=made)
            if out.path not in snapshots:  # kept only when every file is settled
                found = settle(found, settled_limit(made, wall_ns, str(path)))
            rows += found
        else:
            st = os.stat(path)
            if st.st_size >= SETTLE_WAIT_MIN and _racy.before(made, st) is False:
                made = _racy.made_after_writes(tmp_dir)
                st = os.stat(path)
            digest, size = batch.add_file(path)
            stored = StoredOutput(digest, size, FILE)
            rows.append(stat_row(out.path, st, digest, _racy.settled(made, st, wall_ns)))
        outs[out.path] = {"hash": stored.hash, "size": stored.size, "kind": stored.kind}
    return outs, rows


def _format_error(stage: StageSpec, exc: BaseException) -> str:
    if isinstance(exc, StageContractError):
        return f"Stage {stage.id} ({stage.source}) {exc}"
    if isinstance(exc, DiskFull | NotWritable):
        return f"Stage {stage.id} ({stage.source}) could not store its outputs: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return f"Stage {stage.id} was interrupted."
    if isinstance(exc, OutputNotSaved) and exc.__cause__ is not None:
        cause, loader = exc.__cause__, type(exc.out.loader)
        head = (
            f"Stage {stage.id} ({stage.source}): the value it returned for output "
            f"{exc.out.declared} could not be saved by its loader {loader.__name__}"
        )
        if loader.__module__.startswith("pivot."):  # the stage's value, not Pivot's code
            return (
                f"{head}: {type(cause).__name__}: {cause}. Return a value that loader can "
                f"write (e.g. a list instead of a set for JSON)."
            )
        return f"{head}:\n{_traceback_text(cause)}"
    return f"Stage {stage.id} ({stage.source}) raised {type(exc).__name__}:\n{_traceback_text(exc)}"


def _traceback_text(exc: BaseException) -> str:
    """The traceback of `exc` without Pivot's own frames (unless there are only those)."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not f.filename.startswith(PACKAGE_DIR)]
    lines = traceback.format_list(user or frames)
    detail = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    return f"Traceback (most recent call last):\n{''.join(lines)}{detail}"
