"""`pivot run`: plan every stage, restore what can be restored, run the rest in parallel."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot._gcpause import collector_paused
from pivot.cache import prestat, snapshot, tracked
from pivot.cache.checkout import LinkMode
from pivot.cache.edits import refuse_unsaved_edits
from pivot.errors import (
    CacheCorrupt,
    CorruptFile,
    DefinitionError,
    PivotError,
    RemoteIncomplete,
    RemoteUnreachable,
    UnsafePath,
)
from pivot.fingerprint import checked_once
from pivot.run.lock_metrics import lock_metrics
from pivot.run.lockfile import Lock, declares, write_lock
from pivot.run.plan import PENDING, RESTORE, RUN, SKIP, Decision, Planner
from pivot.run.recording import Recorder, discard

if TYPE_CHECKING:
    import concurrent.futures as cf

    from pivot.cache.tracked import Tracked
    from pivot.cache.workspace import Workspace
    from pivot.define.stage import StageSpec
    from pivot.discover.graph import Graph
    from pivot.run.executor import Executor, Outcome
    from pivot.run.ready import ReadyQueue
    from pivot.run.remote_view import Output, RemoteAccess

RAN, SKIPPED, RESTORED, FAILED, BLOCKED = "ran", "skipped", "restored", "failed", "blocked"
log = logging.getLogger(__name__)  # the CLI shows warnings; see pivot.cli.main
CANCELLED = "cancelled"  # stopped by `Runner.cancel` (watch mode: its inputs changed)


class StageReport(NamedTuple):
    """How one stage of a run ended."""

    stage_id: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    cause: PivotError | None = None  # for a failure: the Pivot error behind it (its advice)
    output: str = ""  # the end of what the stage printed, when it ran on another machine
    where: str = ""  # the machine and process that ran it, when not this one


class RunReport:
    """The outcome of a run, stage by stage."""

    __slots__ = ("seconds", "stages")

    def __init__(self) -> None:
        self.stages: list[StageReport] = []
        self.seconds = 0.0

    def count(self, status: str) -> int:
        return sum(1 for s in self.stages if s.status == status)

    @property
    def failed(self) -> list[StageReport]:
        return [s for s in self.stages if s.status in (FAILED, BLOCKED)]

    @property
    def ran(self) -> list[str]:
        return [s.stage_id for s in self.stages if s.status == RAN]


class RunOptions:
    """How a run behaves beyond which stages it covers."""

    __slots__ = (
        "discard_edits",
        "executor",
        "fallback",
        "jobs",
        "keep_going",
        "link",
        "materialize_all",
        "remote",
        "retries",
        "scheduler",
        "targets",
    )

    def __init__(
        self,
        *,
        jobs: int | None = 1,
        keep_going: bool = False,
        link: LinkMode | None = None,
        remote: RemoteAccess | None = None,
        fallback: bool = True,
        materialize_all: bool = False,
        targets: set[str] | None = None,
        executor: str | None = None,
        scheduler: str | None = None,
        retries: int = 0,
        discard_edits: bool = False,
    ) -> None:
        self.jobs = jobs  # None: the CPU count here, unlimited on a cluster
        self.keep_going = keep_going
        self.link = link  # None: the config's `cache.link` (the service sets it)
        self.remote = remote
        self.fallback = fallback
        self.materialize_all = materialize_all
        self.targets = set() if targets is None else targets
        self.executor = executor  # "local" (None) or "dask"
        self.scheduler = scheduler  # the Dask scheduler's address
        self.retries = retries  # resubmissions of a stage whose cluster worker died
        self.discard_edits = discard_edits  # a restore may replace content stored nowhere else


def plan_graph(
    ws: Workspace,
    graph: Graph,
    force: set[str],
    remote: RemoteAccess | None = None,
    locks: dict[str, Lock] | None = None,
) -> tuple[Planner, dict[str, Decision]]:
    """Decide every stage in topological order, before anything executes (`locks`: see
    `Planner`)."""
    planner = Planner(ws, graph, force, remote, locks)
    decisions: dict[str, Decision] = {}
    with checked_once():  # each source file's index checked once per plan
        for sid in graph.order():
            ups = {u: decisions[u].action for u in graph.upstream[sid].values()}
            decision = planner.decide(graph.stages[sid], ups)
            if decision.action in (SKIP, RESTORE):
                planner.settle(sid, decision.outs)
            decisions[sid] = decision
    return planner, decisions


def choose_materialized(
    ws: Workspace, graph: Graph, decisions: dict[str, Decision], options: RunOptions
) -> None:
    """Restores whose outputs a target or a stage that will run reads get checked out;
    the others stay in the cache (or on the remote), recorded by their lock, and `kept`
    says which."""
    down = graph.downstream()
    for sid, decision in decisions.items():
        if decision.action != RESTORE:
            continue
        decision.materialize = (
            options.materialize_all
            or sid in options.targets
            or any(c in options.targets or decisions[c].action in (RUN, PENDING) for c in down[sid])
            or any(os.path.lexists(ws.project.root / path) for path in decision.outs)
        )
        if not decision.materialize:
            local = all(not ws.cache.missing(o["hash"], o["kind"]) for o in decision.outs.values())
            decision.kept = "in cache" if local else "on the remote"


class Runner:
    """Executes a plan: restores first (one batch), then runs stages as they become ready."""

    def __init__(
        self,
        ws: Workspace,
        graph: Graph,
        options: RunOptions,
        on_stage: Callable[[StageReport], None] | None = None,
        on_start: Callable[[str], None] | None = None,
        locks: dict[str, Lock] | None = None,
        pause_collector: bool = False,
    ) -> None:
        """`locks`: lock files the command has just read, by stage id, handed to the first
        plan (so that it does not read them again). `pause_collector`: a one-shot command
        plans with Python's cyclic garbage collector paused (`pivot._gcpause`)."""
        self.ws = ws
        self._pause_collector = pause_collector
        self._read_locks = locks if locks is not None else {}
        self.graph = graph
        self.options = options
        self.on_cluster = options.executor == "dask"
        default_jobs = len(graph.stages) if self.on_cluster else os.cpu_count()
        self.jobs = max(1, options.jobs or default_jobs or 1)
        self.remote = options.remote
        self.on_stage = on_stage or (lambda report: None)
        self.report = RunReport()
        self._executor: Executor | None = None
        self._planner: Planner | None = None
        self._undeclared_seen: set[str] = set()
        self.on_start = on_start or (lambda stage_id: None)
        # Driven from another thread (watch mode): stop starting stages, cancel one.
        self._halted = False
        self._lock = threading.Lock()
        self._live: dict[str, tuple[cf.Future, Decision]] = {}
        self._cancelled: dict[str, str] = {}
        self._to_place: list[Decision] = []  # stages run elsewhere whose outputs go here
        self._recorder = Recorder(ws, self._new_lock)  # stages that ran, recorded in batches
        self._ready: ReadyQueue | None = None  # the stages that may start, while scheduling
        self._connection: Any = None  # run.dask.Connection, started while planning
        # On a cluster: stages submitted before their upstreams finished (`_chain_after`),
        # not yet decided, and their futures.
        self._chained: dict[str, cf.Future] = {}
        # Stages downstream of the ones submitted, to fingerprint while those run.
        self._to_prepare: collections.deque[str] = collections.deque()

    def halt(self) -> None:
        """Start no more stages (callable from any thread): the running ones finish, the
        others are left unreported, and `run` returns."""
        self._halted = True

    @property
    def halted(self) -> bool:
        return self._halted

    def running(self) -> dict[str, Decision]:
        """The stages executing right now, with their decisions (deps as planned)."""
        with self._lock:
            return {sid: decision for sid, (_, decision) in self._live.items()}

    def cancel(self, stage_id: str, reason: str) -> None:
        """Stop a running stage (from any thread) and halt the run: it reports `cancelled`
        with `reason`, and what it wrote is removed. Blocks until the executor stopped it."""
        self.halt()
        with self._lock:
            live = self._live.get(stage_id)
            if live is None or stage_id in self._cancelled:
                return
            self._cancelled[stage_id] = reason
        from pivot.run.executor import StoppingExecutor

        assert isinstance(self._executor, StoppingExecutor)  # watch mode runs locally
        self._executor.cancel(live[0], stage_id)

    def plan(self, force: set[str], fork: bool = True) -> tuple[Planner, dict[str, Decision]]:
        """Decide every stage; the remote is read only if a stage would otherwise run.

        The workers are forked (`fork`) before the remote's client may start threads.
        """
        planner, decisions = plan_graph(self.ws, self.graph, force, self.remote, self._read_locks)
        if self.remote is not None and _runs_any(decisions):
            if fork and not self.on_cluster:
                self._start_executor(decisions)
            elif fork and self._connection is None and self.options.scheduler is not None:
                from pivot.run.dask import connect

                self._connection = connect(self.ws, self.remote, self.options.scheduler)
            if self._connect():
                planner, decisions = plan_graph(self.ws, self.graph, force, self.remote)
        self._planner = planner
        choose_materialized(self.ws, self.graph, decisions, self.options)
        return planner, decisions

    def run(self, force: set[str]) -> RunReport:
        start = time.perf_counter()
        try:
            with collector_paused() if self._pause_collector else contextlib.nullcontext():
                planner, decisions = self.plan(force)
            prestat.close_window()  # stages may write into the folders from here on
            self._start_executor(decisions)
            if self._place_tracked(planner, decisions):
                planner, decisions = plan_graph(self.ws, self.graph, force, self.remote)
                self._planner = planner
                choose_materialized(self.ws, self.graph, decisions, self.options)
            self._refuse_unsaved_edits(
                [d for d in decisions.values() if d.action == RESTORE and d.materialize]
            )
            self._fetch_restores(decisions)
            self._execute(planner, decisions)
            self._place_ran()
        finally:
            self.ws.state.commit()
            if self._executor is not None:
                self._executor.shutdown()
            elif self._connection is not None:
                self._connection.close()
        self.report.seconds = time.perf_counter() - start
        return self.report

    # -- the remote ------------------------------------------------------------------------

    def _connect(self) -> bool:
        """Read the remote's indexes; without it, fall back to running (or stop)."""
        assert self.remote is not None
        try:
            self.remote.contents()
        except PivotError as exc:
            self._remote_failed(exc)
            return False
        return True

    def _remote_label(self) -> str:
        """The remote's name and redacted url, or its name if it cannot even be opened."""
        assert self.remote is not None
        try:
            return self.remote.display
        except PivotError:
            return repr(self.remote.name or "(default)")

    def _remote_failed(self, exc: PivotError) -> None:
        label = self._remote_label() if self.remote is not None else "(none)"
        if self.on_cluster:
            raise exc.reworded(
                f"The Dask executor needs the remote {label}, the only storage the cluster's "
                f"workers share with this machine, and it failed: {exc} Nothing more was "
                f"submitted; fix the remote, or run the stages with the local executor."
            ) from exc
        if not self.options.fallback:
            raise exc.reworded(
                f"Cannot restore from the remote {label}: {exc} "
                f"Nothing more was run (--no-fallback); fix the remote or run without "
                f"--no-fallback to compute the missing outputs here."
            ) from exc
        problem = (
            str(exc)
            if isinstance(exc, RemoteIncomplete)
            else f"The remote {label} is unavailable ({exc})."
        )
        log.warning(
            f"{problem} Stages that cannot be restored from the local cache will run here instead."
        )
        self.remote = None
        if self._planner is not None:
            self._planner.remote = None

    def _fetch(self, outputs: list[Output]) -> bool:
        """Bring blobs into the local cache from the remote; False when that failed."""
        if not outputs:
            return True
        if self.remote is None:
            return False
        try:
            self.remote.fetch(outputs)
        except PivotError as exc:
            self._remote_failed(exc)
            return False
        return True

    def _fetch_restores(self, decisions: dict[str, Decision]) -> None:
        """One batch for every checkout this run needs, before any stage executes."""
        restores = [d for d in decisions.values() if d.action == RESTORE]
        wanted = [
            (o["hash"], o["kind"])
            for d in restores
            if d.materialize
            for o in d.outs.values()
            if self.ws.cache.missing(o["hash"], o["kind"])
        ]
        if not self._fetch(list(dict.fromkeys(wanted))):
            for decision in restores:
                decision.materialize = True

    def _place_tracked(self, planner: Planner, decisions: dict[str, Decision]) -> bool:
        """Check out the tracked data that stages which may execute read and the workspace
        lacks (fetched from the remote if needed); returns whether anything was placed."""
        wanted: dict[str, Tracked] = {}
        root = self.ws.project.root
        for decision in decisions.values():
            if decision.action not in (RUN, PENDING):
                continue
            for dep in decision.stage.deps:
                record = tracked.covering(planner.tracked, dep.path)
                if record is not None and not os.path.lexists(root / dep.path):
                    wanted[record.path] = record
        if not wanted:
            return False
        cache = self.ws.cache
        self._fetch([(r.hash, r.kind) for r in wanted.values() if cache.missing(r.hash, r.kind)])
        refetch = self._refetch if self.remote is not None else None
        for path, record in sorted(wanted.items()):
            if cache.missing(record.hash, record.kind):
                file = tracked.shown(self.ws.project, tracked.record_file(self.ws.project, path))
                raise PivotError(
                    f"A stage that must run reads the tracked data {path} ({file} records "
                    f"it), which is not in the workspace, not in the local cache and not on "
                    f"any remote that could be reached. Fetch it from a remote that holds it, "
                    f"or track it again where it exists."
                )
            self.ws.place_output(path, record.out, self.options.link, "the tracked data", refetch)
        return True

    def _refuse_unsaved_edits(self, restores: list[Decision]) -> None:
        """Stop before a restore replaces an output edit that exists nowhere else."""
        if not self.options.discard_edits:
            refuse_unsaved_edits(self.ws, [item for d in restores for item in d.outs.items()])

    # -- executor ------------------------------------------------------------------------

    def _start_executor(self, decisions: dict[str, Decision] | None = None) -> Executor | None:
        """Start the workers before remote I/O starts threads (only when a stage may run)."""
        count = self.jobs if decisions is None else _runs_any(decisions)
        if self._executor is None and count and self.on_cluster:
            self._executor = self._start_dask(decisions)
        elif self._executor is None and count:
            from pivot.run.local import LocalExecutor

            workers = min(self.jobs, count)
            self._executor = LocalExecutor(self.graph.stages, workers, self.ws.project)
        return self._executor

    def _start_dask(self, decisions: dict[str, Decision] | None) -> Executor:
        """Connect to the cluster (the remote was read while planning)."""
        from pivot.run.dask import DaskExecutor

        if self.remote is None or self._planner is None or not self.remote.contacted:
            raise PivotError(
                "The Dask executor needs a remote (the only storage the workers share with "
                "this machine), and none is in use."
            )
        assert self.options.scheduler is not None
        may_run = [
            d.stage for d in (decisions or {}).values() if d.action in (RUN, PENDING)
        ] or list(self.graph.stages.values())
        return DaskExecutor(
            self.ws,
            self.graph.stages,
            self._planner,
            self.remote,
            self.options.scheduler,
            self.options.retries,
            may_run,
            self._connection,
        )

    # -- execution -------------------------------------------------------------------------

    def _execute(self, planner: Planner, decisions: dict[str, Decision]) -> None:
        done: dict[str, str] = {}
        unsettled: set[str] = set()
        for sid in self.graph.order():
            decision = decisions[sid]
            if unsettled.intersection(self.graph.upstream[sid].values()):
                decision.action = decision.action if decision.action == RUN else PENDING
            if decision.action in (RUN, PENDING):
                unsettled.add(sid)
            elif decision.action == SKIP:
                self._finish(StageReport(sid, SKIPPED), done)
                self._write_lock_if_changed(decision, decision.outs)
            elif decision.action == RESTORE and self._restore(decision):
                if decision.materialize:
                    detail = "; ".join(decision.reasons)
                    self._finish(StageReport(sid, RESTORED, detail=detail), done)
                else:
                    self._finish(StageReport(sid, SKIPPED, detail=decision.kept), done)
            else:
                decision.action = RUN
                decision.reasons.append("cached outputs are not available")
                unsettled.add(sid)
        self._schedule(planner, decisions, done)

    def _schedule(
        self, planner: Planner, decisions: dict[str, Decision], done: dict[str, str]
    ) -> None:
        order = self.graph.order()
        pending = [s for s in order if s not in done]
        recorder = self._recorder
        if not pending:  # every stage settled without running (a no-op run)
            try:
                recorder.flush()
            finally:
                recorder.close()
            return
        from pivot.run.ready import ReadyQueue

        self._ready = ReadyQueue(self.graph, order, pending, set(done))
        self._downstream = self.graph.downstream()
        self._to_prepare.clear()
        running: dict[cf.Future, Decision] = {}
        stop = False
        import concurrent.futures as cf

        try:
            while True:
                if not stop and not self._halted:
                    failed = self._start_ready(planner, decisions, running, done)
                    stop = failed and not self.options.keep_going
                if (stop or self._halted) and self._chained:
                    for chained in self._chained.values():
                        self._cluster().drop(chained)
                    self._chained.clear()
                # Recorded after submitting, in batches (see recording.py) on the
                # recorder's thread while stages run, the last one when nothing runs.
                if not running:
                    recorder.flush()
                    break
                if recorder.due():
                    recorder.flush_in_background()
                self._prepare_next(planner, decisions, running)
                finished, _ = cf.wait(
                    [*running, *recorder.flushing()],
                    timeout=recorder.wait_at_most(),
                    return_when=cf.FIRST_COMPLETED,
                )
                recorder.check()
                interrupted = False
                for future in finished:
                    if future not in running:  # the recorder's flush
                        continue
                    decision = running.pop(future)
                    outcome = self._outcome_of(future, decision)
                    if outcome.resubmit:  # a chained stage that did not run as decided
                        with self._lock:
                            self._live.pop(decision.stage.id, None)
                        if not stop and not self._halted:
                            again = self._submit(decision)
                            running[again] = decision
                            with self._lock:
                                self._live[decision.stage.id] = (again, decision)
                        continue
                    with self._lock:
                        self._live.pop(decision.stage.id, None)
                        reason = self._cancelled.get(decision.stage.id)
                    if reason is not None:
                        discard(outcome)
                        self._remove_outputs(decision)
                        report = StageReport(decision.stage.id, CANCELLED, outcome.seconds, reason)
                        self._finish(report, done)
                        continue
                    if outcome.interrupted:
                        # Ctrl-C reached the stage first (or only): the run was interrupted,
                        # not the stage failed; its half-written outputs go below.
                        running[future] = decision
                        interrupted = True
                        continue
                    outcome = self._complete(planner, decision, outcome, done)
                    if outcome.ok:
                        recorder.add(decision, outcome)
                    elif not self.options.keep_going or outcome.executor_lost:
                        stop = True
                if interrupted:  # after the batch: stages that finished are recorded
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            try:
                recorder.flush()
            finally:  # a flush error still leaves no half-written output
                for decision in running.values():
                    self._remove_outputs(decision)
            raise
        except BaseException:
            recorder.flush()  # the stages that finished keep their records
            raise
        finally:
            recorder.close()

    def _start_ready(
        self,
        planner: Planner,
        decisions: dict[str, Decision],
        running: dict[cf.Future, Decision],
        done: dict[str, str],
    ) -> bool:
        """Skip, restore or block every waiting stage whose upstreams are done, and submit
        the ones to run while fewer than `jobs` are running (so none starts after a failure
        that stops the run). A stage whose dep is missing fails here; whether one did (then,
        without `keep_going`, nothing else starts)."""
        assert self._ready is not None
        failed = False
        unstarted = []
        chained = None
        while (sid := self._ready.pop()) is not None:
            chained = self._chained.pop(sid, None)
            if chained is not None and len(running) >= self.jobs:
                self._chained[sid] = chained  # counted among the running already
                chained = None
            ups = self.graph.upstream[sid].values()
            failed_ups = [u for u in ups if done.get(u) in (FAILED, BLOCKED)]
            if failed_ups:
                detail = f"upstream {', '.join(failed_ups)} failed"
                self._finish(StageReport(sid, BLOCKED, detail=detail), done)
            else:
                decision = decisions[sid] = self._redecide(planner, decisions[sid])
                if decision.action == SKIP:
                    self._finish(StageReport(sid, SKIPPED), done)
                elif decision.action == RESTORE and self._restore(decision):
                    self._finish(StageReport(sid, RESTORED), done)
                elif decision.absent_deps:
                    absent = self.graph.absent.get(sid, {})
                    detail = " ".join(
                        absent.get(p, f"Stage {sid} depends on {p}, which does not exist.")
                        for p in decision.absent_deps
                    )
                    first = decision.absent_deps[0]
                    folder = tracked.covering(planner.tracked, first)
                    if folder is None:
                        cause = DefinitionError(detail, path=first, hint="track-raw-data")
                    else:
                        detail += f" It lies inside the tracked folder {folder.path}."
                        cause = DefinitionError(detail, path=folder.path, hint="retrack-folder")
                    self._finish(StageReport(sid, FAILED, detail=detail, cause=cause), done)
                    failed = True
                    if not self.options.keep_going:
                        break
                elif chained is not None or len(running) < self.jobs:
                    decision.action = RUN
                    if chained is not None:
                        future = self._cluster().adopt(chained, decision)
                        chained = None
                    else:
                        future = self._submit(decision)
                    running[future] = decision
                    self._to_prepare.extend(self._downstream.get(sid, ()))
                    with self._lock:
                        self._live[sid] = (future, decision)
                    self.on_start(sid)
                    self._chain_after(sid, planner, decisions, done)
                else:
                    unstarted.append(sid)
            if chained is not None:  # decided not to run
                self._cluster().drop(chained)
                chained = None
        if chained is not None:  # the stage failed and stopped the run
            self._cluster().drop(chained)
        self._ready.put_back(unstarted)
        return failed

    def _prepare_next(
        self, planner: Planner, decisions: dict[str, Decision], running: dict[cf.Future, Decision]
    ) -> None:
        """While stages run and none has finished, fingerprint the code of one stage waiting
        on them (`Planner.prepare`), so that deciding it once they finish, on the path of a
        chain of stages, costs less."""
        if any(future.done() for future in running):
            return
        while self._to_prepare:
            decision = decisions[self._to_prepare.popleft()]
            if decision.action == PENDING and planner.prepare(decision.stage):
                return

    def _cluster(self) -> Any:
        """The executor, as the Dask executor (which alone chains stages)."""
        return self._executor

    def _chain_after(
        self, sid: str, planner: Planner, decisions: dict[str, Decision], done: dict[str, str]
    ) -> None:
        """On a cluster, submit the stages downstream of `sid` (just submitted) at once,
        and theirs in turn, each with the tasks of its running upstreams as dependencies
        (`DaskExecutor.chain`): Dask starts one as soon as they end, on the worker holding
        their outputs. Each is still decided when its upstreams finish, as any stage; the
        executor keeps the worker's outcome only if the decision is to run it with the
        same run key. Stages whose other deps cannot be hashed now are left to the usual
        path."""
        chain = getattr(self._executor, "chain", None)
        if chain is None:
            return
        down = self._downstream
        todo = [sid]
        while todo:
            for child in down.get(todo.pop(), ()):
                if child in self._chained or child in done or child in self._live:
                    continue
                if len(self._live) + len(self._chained) >= self.jobs:
                    return
                if decisions[child].action != PENDING:
                    continue
                handle = self._chain(child, planner, done, chain)
                if handle is not None:
                    self._chained[child] = handle
                    todo.append(child)

    def _chain(self, sid: str, planner: Planner, done: dict[str, str], chain: Callable) -> Any:
        """Submit one stage ahead of its decision (see `_chain_after`), or return None."""
        stage = self.graph.stages[sid]
        links = self.graph.upstream[sid]
        waiting = sorted({u for u in links.values() if u in self._live or u in self._chained})
        if any(
            u not in waiting and done.get(u) not in (RAN, SKIPPED, RESTORED) for u in links.values()
        ):
            return None
        deps: dict[str, str] = {}
        for dep in stage.deps:
            if dep.path in links and links[dep.path] in waiting:
                continue
            if dep.path in planner.known:
                deps[dep.path] = planner.known[dep.path]["hash"]
                continue
            found = self.ws.hasher.hash_path(dep.path)
            if found is None:
                return None
            deps[dep.path] = found.hash
        lock = planner.lock_of(sid)
        avoid = set()
        if lock is not None and sid not in planner.force and declares(stage, lock.outs):
            avoid.add(lock.run_key)
        try:
            return chain(stage, deps, waiting, planner.fingerprint_of(stage), avoid)
        except PivotError:
            return None

    def _outcome_of(self, future: cf.Future, decision: Decision) -> Outcome:
        assert self._executor is not None
        return self._executor.outcome(future, decision.stage.id)

    def _submit(self, decision: Decision) -> cf.Future:
        executor = self._start_executor()
        assert executor is not None  # started for `jobs` stages
        return executor.submit(decision)

    def _redecide(self, planner: Planner, decision: Decision) -> Decision:
        if decision.action != PENDING:
            return decision
        stage = decision.stage
        ups = {u: SKIP for u in self.graph.upstream[stage.id].values()}
        return planner.decide(stage, ups)

    def _complete(
        self,
        planner: Planner,
        decision: Decision,
        outcome: Outcome,
        done: dict[str, str],
    ) -> Outcome:
        """Report a finished stage; a success whose deps changed meanwhile is a failure."""
        sid = decision.stage.id
        original = outcome
        if outcome.ok:
            changed = self._deps_changed_since_planned(decision)
            if changed:  # a no-op run (nothing executed) never imports the executors
                from pivot.run.executor import Outcome
            if changed and self._halted:  # watch mode: the change is planned next
                discard(outcome)
                self._remove_outputs(decision)
                reason = f"its input {', '.join(changed)} changed while it ran"
                self._finish(StageReport(sid, CANCELLED, outcome.seconds, reason), done)
                return Outcome(sid, False, seconds=outcome.seconds, error=reason)
            if changed:
                outcome = Outcome(
                    sid,
                    False,
                    seconds=outcome.seconds,
                    error=(
                        f"Stage {sid} ({decision.stage.source}): {', '.join(changed)} changed "
                        f"while the stage ran, so its outputs may not match its inputs; they "
                        f"were not recorded. Run again."
                    ),
                )
        if not outcome.ok:
            discard(original)
            self._remove_outputs(decision)
            failed = StageReport(
                sid, FAILED, outcome.seconds, outcome.error, outcome.cause, outcome.output
            )
            self._finish(failed, done)
            return outcome
        self.ws.state.record_rows(outcome.stats)
        if not self.on_cluster:  # a cluster worker's snapshots are of its own folders
            for rel, found in outcome.snapshots.items():
                snapshot.save(self.ws.state, rel, found)
        planner.settle(sid, outcome.outs)
        if self.on_cluster:
            decision.outs = outcome.outs
            self._to_place.append(decision)
            getattr(self._executor, "note_on_remote", lambda outs: None)(outcome.outs)
            if self._wanted_here(decision):
                prefetch = getattr(self._executor, "prefetch", lambda outputs: None)
                prefetch(self._missing_here([decision]))
        detail = "; ".join(decision.reasons)
        report = StageReport(
            sid, RAN, outcome.seconds, detail, output=outcome.output, where=outcome.where
        )
        self._finish(report, done)
        self._warn_undeclared(decision.stage, outcome.undeclared)
        return outcome

    def _remove_outputs(self, decision: Decision) -> None:
        """Delete what a stage that did not complete wrote, never through a symlinked
        folder (the stage refuses such an output before it runs; one that made the link
        itself keeps what it wrote)."""
        for out in decision.stage.outs:
            what = f"the output of {decision.stage.id}"
            try:
                self.ws.project.write_path(out.path, what)
                self.ws.project.remove_output(out.path, what)  # never through a swapped link
            except UnsafePath:
                continue

    def _warn_undeclared(self, stage: StageSpec, paths: list[str]) -> None:
        """Name the files that appeared while `stage` ran and that no stage declares (each
        once per run: a stage running alongside sees them appear too)."""
        new = [p for p in paths if p not in self._undeclared_seen]
        self._undeclared_seen.update(new)
        if not new:
            return
        shown = ", ".join(new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
        log.warning(
            f"{shown} appeared while stage {stage.id} ({stage.source}) ran (it, or a stage "
            f"running alongside, created {'it' if len(new) == 1 else 'them'}), and no stage "
            f"declares {'it' if len(new) == 1 else 'them'} as an output: Pivot does not "
            f"cache, restore or push {'it' if len(new) == 1 else 'them'}. Declare outputs "
            f"with pivot.Out, and write scratch files outside the project."
        )

    def _deps_changed_since_planned(self, decision: Decision) -> list[str]:
        """Deps that are not what the stage was planned with (on a cluster, the outputs of
        other stages are taken from the remote by hash: only source files are checked)."""
        links = self.graph.upstream[decision.stage.id]
        changed = []
        for path, planned in decision.deps.items():
            if self.on_cluster and path in links:
                continue
            now = self.ws.hasher.hash_path(path)
            if now is None or now.hash != planned:
                changed.append(path)
        return changed

    def _place_ran(self) -> None:
        """Check out the outputs of stages that ran on the cluster which this workspace
        needs (`_wanted_here`); what the background fetch (`run/prefetch.py`) has not
        brought yet is fetched from the remote as one batch."""
        getattr(self._executor, "end_prefetch", lambda: None)()
        ran, self._to_place = self._to_place, []
        for decision in ran:
            decision.materialize = self._wanted_here(decision)
        wanted = [d for d in ran if d.materialize]
        missing = self._missing_here(wanted)
        if missing:
            assert self.remote is not None
            self.remote.fetch(missing, self._cluster().known_contents(missing))
        for decision in wanted:
            self._check_out(decision)

    def _wanted_here(self, decision: Decision) -> bool:
        """Whether the outputs of a stage that ran on the cluster are checked out here: a
        target's, every one with --materialize, or one whose path exists here and would
        otherwise be stale."""
        return (
            self.options.materialize_all
            or decision.stage.id in self.options.targets
            or any(os.path.lexists(self.ws.project.root / p) for p in decision.outs)
        )

    def _missing_here(self, decisions: list[Decision]) -> list[tuple[str, str]]:
        """The outputs of `decisions` that the local cache lacks (each once)."""
        missing = [
            (o["hash"], o["kind"])
            for d in decisions
            for o in d.outs.values()
            if self.ws.cache.missing(o["hash"], o["kind"])
        ]
        return list(dict.fromkeys(missing))

    def _restore(self, decision: Decision) -> bool:
        """Check out a stage's cached outputs (fetching what is missing); False if unable."""
        if not decision.materialize:
            self._keep_fetched_record(decision)
            self._write_lock_if_changed(decision, decision.outs)
            return True
        self._refuse_unsaved_edits([decision])
        cache = self.ws.cache
        missing = [
            (o["hash"], o["kind"])
            for o in decision.outs.values()
            if cache.missing(o["hash"], o["kind"])
        ]
        if not self._fetch(missing):
            return False
        try:
            self._check_out(decision)
        except (CacheCorrupt, CorruptFile, UnsafePath) as exc:
            log.warning(f"Cannot restore {decision.stage.id} from the cache ({exc}); running it.")
            return False
        self._keep_fetched_record(decision)
        self._write_lock_if_changed(decision, decision.outs)
        return True

    def _keep_fetched_record(self, decision: Decision) -> None:
        """Store the run record the planner read from the remote for a restored stage."""
        if decision.fetched_record is not None and decision.run_key is not None:
            self.ws.runs.put_bytes(
                decision.run_key, decision.fetched_record, "a fetched run record"
            )

    def _check_out(self, decision: Decision) -> None:
        refetch = self._refetch if self.remote is not None else None
        what = f"the output of {decision.stage.id}"
        for path, out in decision.outs.items():
            self.ws.place_output(path, out, self.options.link or LinkMode.COPY, what, refetch)

    def _refetch(self, digest: str, kind: str) -> None:
        """Fetch again the blobs of an output whose cached copy was damaged."""
        if not self._fetch([(digest, kind)]):
            raise RemoteUnreachable(
                "the remote is unavailable (see the warning above).",
                remote=self._remote_label(),
            )

    def _write_lock_if_changed(self, decision: Decision, outs: dict[str, dict[str, Any]]) -> None:
        lock = self._new_lock(decision, outs)
        if decision.lock != lock:
            write_lock(self.ws.project.stages_dir, lock)

    def _new_lock(self, decision: Decision, outs: dict[str, dict[str, Any]]) -> Lock:
        metrics = lock_metrics(decision.stage, outs, decision.lock, self.ws.cache)
        return decision.new_lock(outs, metrics)

    def _finish(self, report: StageReport, done: dict[str, str]) -> None:
        done[report.stage_id] = report.status
        if self._ready is not None:
            self._ready.settled(report.stage_id, report.status in (FAILED, BLOCKED))
        self.report.stages.append(report)
        self.on_stage(report)


def _runs_any(decisions: dict[str, Decision]) -> int:
    """How many stages may execute (run now, or decided once their upstreams ran)."""
    return sum(1 for d in decisions.values() if d.action in (RUN, PENDING))
