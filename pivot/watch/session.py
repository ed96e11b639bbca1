"""`pivot run --watch`: run the scope once, then watch its paths and run it again after
each change, reporting everything as `WatchEvent`s (the CLI renders them)."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import pathlib
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot import fingerprint
from pivot.cache.snapshot import SnapshotHasher
from pivot.discover.finder import Discovery
from pivot.discover.scope import resolve_scope
from pivot.errors import PivotError
from pivot.run.lockfile import read_lock
from pivot.run.remote_view import RemoteAccess
from pivot.run.scheduler import (
    BLOCKED,
    CANCELLED,
    FAILED,
    RAN,
    RESTORED,
    SKIPPED,
    Runner,
    RunOptions,
    StageReport,
)
from pivot.watch.paths import CODE, FOLDER, INPUT, OUTPUT, WatchSet, watch_set
from pivot.watch.watcher import Watcher

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.discover.scope import Scope
    from pivot.run.plan import Decision

SETTLE = 0.02  # seconds to wait for the other watcher thread's part of the same burst
SHOWN_PATHS = 20  # changed paths named in one `change` event


@dataclass
class WatchEvent:
    """One thing the watch reports: `event` is one of `watching`, `change`,
    `stage_started`, `stage_finished`, `stage_failed`, `run_finished`, `error`, `idle`
    (docs/cli.md gives the fields of each); `report` is the stage's, for stage events.
    Messages are Pivot's (`str` of the error); the CLI adds the advice of their hint."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)
    report: StageReport | None = None
    error: PivotError | None = None  # for `error`: the CLI adds its advice
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "time": round(self.time, 3), **self.data}


@dataclass
class WatchRequest:
    """What to watch and how to run it: `run`'s scope and options."""

    targets: tuple[str, ...]
    all_pipelines: bool
    force: bool
    options: RunOptions
    remote_name: str | None
    use_remote: bool
    cwd: pathlib.Path = field(default_factory=pathlib.Path.cwd)


class Session:
    """The watch loop. `serve` blocks until Ctrl-C; the watcher threads deliver changed
    paths to a dispatcher thread, which classifies them, and while a run is going on
    halts it (no stage starts any more) and cancels a running stage whose own inputs
    changed; the main thread re-plans once the run has ended."""

    def __init__(
        self, ws: Workspace, request: WatchRequest, on_event: Callable[[WatchEvent], None]
    ) -> None:
        self.ws = ws
        self.root = ws.project.root
        self.request = request
        self.on_event = on_event
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, str] = {}  # project path -> its kind (paths.CODE, ...)
        self._runner: Runner | None = None
        self._watch: WatchSet | None = None
        self._scope: Scope | None = None
        self._baseline: dict[str, str | None] = {}  # output -> hash Pivot left there
        self._inputs_seen: dict[str, str | None] = {}  # input file -> hash at its last change
        self._queue: queue.SimpleQueue[set[str] | None] = queue.SimpleQueue()
        self._watcher = Watcher(str(self.root), self._queue.put)
        # The dispatcher thread's own hasher, on the same (thread-safe) state db as `run`:
        # a write in a large folder dep re-hashes the changed files only.
        self._thread_hasher = SnapshotHasher(
            self.root, ws.state, marker_dir=str(ws.project.tmp_dir)
        )

    # -- the main thread -------------------------------------------------------------------

    def serve(self) -> None:
        """Run, watch, run again on each change; returns on Ctrl-C while waiting (a Ctrl-C
        during a run raises KeyboardInterrupt once the run is cleaned up)."""
        dispatcher = threading.Thread(target=self._dispatch, name="pivot-watch-dispatch")
        dispatcher.daemon = True
        dispatcher.start()
        try:
            self._load(set())
            halted = self._cycle(self.request.force)
            while True:
                paths, code = set(), set()
                if halted:  # a change stopped the run: plan again, whatever it was
                    with self._lock:
                        items, self._pending = self._pending, {}
                    paths, code = self._relevant(items)
                else:
                    try:
                        self._emit("idle")
                        while not paths:
                            paths, code = self._relevant(self._wait())
                    except KeyboardInterrupt:  # while waiting: the way to stop watching
                        return
                if paths:
                    shown = sorted(paths)
                    self._emit(
                        "change",
                        paths=shown[:SHOWN_PATHS],
                        count=len(shown),
                        reload=bool(code),
                    )
                if code or self._scope is None:
                    self._load(code)
                halted = self._cycle(False)
        finally:
            self._watcher.close()
            self._queue.put(None)

    def _wait(self) -> dict[str, str]:
        with self._changed:
            while not self._pending:
                self._changed.wait()
            items, self._pending = self._pending, {}
        return items

    def _relevant(self, items: dict[str, str]) -> tuple[set[str], set[str]]:
        """The changed paths worth a new plan, and the code files among them. An output
        counts only when it differs from what Pivot itself left there; a folder only when
        it changes which folders are watched."""
        watch = self._watch
        assert watch is not None
        code = {rel for rel, kind in items.items() if kind == CODE and self._input_changed(rel)}
        paths = {rel for rel, kind in items.items() if kind == INPUT and self._input_changed(rel)}
        outputs = {watch.output_of(rel) for rel, kind in items.items() if kind == OUTPUT}
        for folder in (rel for rel, kind in items.items() if kind == FOLDER):
            # A folder came or went: what lies below it may have too, unseen.
            inside = watch.below(folder)
            code.update(inside & watch.code)
            paths.update(inside & watch.inputs)
            outputs.update(p for p in inside if p in watch.outputs)
        paths |= code
        for out in outputs - {None}:
            assert out is not None
            now = self._hash(out)
            if now != self._baseline_of(out, watch.outputs[out]):
                self._baseline[out] = now
                paths.add(out)
        flat, trees = watch.roots()
        self._watcher.watch(flat, trees, again={str(self.root / rel) for rel in items})
        return paths, code

    def _input_changed(self, rel: str) -> bool:
        """Whether an input or code file differs from when it was last seen changing (an
        event delivered twice, or a file saved unchanged, is no change). Folders always
        count: the plan hashes them anyway."""
        if not (self.root / rel).is_file():
            self._inputs_seen.pop(rel, None)
            return True
        now = self._hash(rel)
        if now is not None and self._inputs_seen.get(rel) == now:
            return False
        self._inputs_seen[rel] = now
        return True

    def _load(self, changed_code: set[str]) -> None:
        """(Re)load the scope from the pipeline files, with no stale module or bytecode
        cache; on an error, report it and keep watching what was watched before."""
        fingerprint.clear_cache()
        for rel in changed_code:
            if rel.endswith(".py"):
                # The .pyc records the source's mtime in whole seconds: an edit within the
                # second that compiled it would run the old code.
                cached = importlib.util.cache_from_source(str(self.root / rel))
                pathlib.Path(cached).unlink(missing_ok=True)
        importlib.invalidate_caches()
        req = self.request
        try:
            scope = resolve_scope(self.ws, req.targets, req.all_pipelines, req.cwd)
            modules: set[str] = set()
            for stage in scope.graph.stages.values():
                try:
                    modules |= fingerprint.source_files(stage.func, self.root, stage.params)
                except TypeError:  # not a Python function: planning names it
                    continue
        except PivotError as exc:
            fallback = self._fallback(exc)
            if not fallback.paths():  # nothing to watch for a fix: as `run`, an error
                raise
            self._scope = None
            self._set_watch(fallback)
            self._emit("error", exc=exc, message=str(exc))
            return
        loaded = list(scope.discovery.pipelines.values())
        watch = watch_set(self.root, scope.graph, loaded, modules)
        watch.pipelines = len({s.pipeline for s in scope.graph.stages.values()})
        self._scope = scope
        self._set_watch(watch)
        self._emit("watching", paths=len(watch.paths()), pipelines=watch.pipelines)

    def _fallback(self, exc: PivotError) -> WatchSet:
        """What to watch when the scope cannot load: what was watched before, the files the
        error went through, and the pipeline file nearest to the cwd."""
        before = self._watch or WatchSet(self.root)
        files: set[str] = set()
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, SyntaxError) and seen.filename:
                files.add(seen.filename)
            files.update(f.filename for f in traceback.extract_tb(seen.__traceback__))
            seen = seen.__cause__ or seen.__context__
        try:
            nearest = Discovery(self.ws.project, self.ws.state).nearest_pipeline(self.request.cwd)
        except PivotError:
            nearest = None
        if nearest is not None:
            files.add(str(nearest))
        prefix = str(self.root) + os.sep
        code = {f[len(prefix) :].replace(os.sep, "/") for f in files if f.startswith(prefix)}
        code = {c for c in code if "/site-packages/" not in f"/{c}"}
        dirs = {c.rpartition("/")[0] for c in code}
        return WatchSet(
            self.root,
            code=before.code | code,
            inputs=set(before.inputs),
            outputs=dict(before.outputs),
            pipeline_dirs=before.pipeline_dirs | dirs,
            pipelines=before.pipelines,
        )

    def _set_watch(self, watch: WatchSet) -> None:
        with self._lock:
            self._watch = watch
        flat, trees = watch.roots()
        self._watcher.watch(flat, trees)

    def _cycle(self, force: bool) -> bool:
        """Plan the scope and run it, as `pivot run` does, reporting each stage; whether a
        change halted it."""
        scope = self._scope
        if scope is None:
            return False
        req = self.request
        options = copy.copy(req.options)
        options.targets = set(scope.targets)
        remote = RemoteAccess(self.ws.project, req.remote_name)
        runner = None
        try:
            options.remote = remote if req.use_remote and remote.is_configured() else None
            runner = Runner(
                self.ws, scope.graph, options, on_stage=self._stage_done, on_start=self._started
            )
            with self._lock:
                self._runner = runner
            with self.ws.project.exclusive("run"):
                report = runner.run(set(scope.targets) if force else set())
        except PivotError as exc:
            self._emit("error", exc=exc, message=str(exc))
            return False
        finally:
            with self._lock:
                self._runner = None
            if runner is not None:
                self._keep_baseline(runner.report.stages)
        if runner.halted and all(s.status == SKIPPED for s in report.stages):
            return True  # a change came before anything happened: the next run replaces it
        counts = {s: report.count(s) for s in (RAN, RESTORED, SKIPPED, FAILED, BLOCKED)}
        counts[CANCELLED] = report.count(CANCELLED)
        self._emit(
            "run_finished",
            stages=len(scope.graph.stages),
            **counts,
            not_started=len(scope.graph.stages) - len(report.stages),
            seconds=round(report.seconds, 3),
        )
        return runner.halted

    def _keep_baseline(self, reports: list[StageReport]) -> None:
        """Remember what the stages that ran, were restored, failed or were cancelled left
        at their outputs: events for those writes are Pivot's own."""
        assert self._scope is not None
        for report in reports:
            if report.status in (SKIPPED, BLOCKED):
                continue
            for out in self._scope.graph.stages[report.stage_id].outs:
                self._baseline[out.path] = self._hash(out.path)

    def _baseline_of(self, out: str, stage_id: str) -> str | None:
        if out not in self._baseline:
            try:
                lock = read_lock(self.ws.project.stages_dir, stage_id)
            except PivotError:
                lock = None
            recorded = lock.outs.get(out) if lock is not None else None
            self._baseline[out] = recorded["hash"] if recorded else None
        return self._baseline[out]

    def _hash(self, rel: str) -> str | None:
        try:
            found = self.ws.hasher.hash_path(rel)
        except (OSError, PivotError):
            return None
        return found.hash if found is not None else None

    def _started(self, stage_id: str) -> None:
        self._emit("stage_started", stage=stage_id)

    def _stage_done(self, report: StageReport) -> None:
        data: dict[str, Any] = {
            "stage": report.stage_id,
            "status": report.status,
            "seconds": round(report.seconds, 3),
        }
        if report.status in (FAILED, BLOCKED, CANCELLED):
            self._emit("stage_failed", report=report, **data, error=report.detail)
        else:
            self._emit("stage_finished", report=report, **data, detail=report.detail)

    def _emit(
        self,
        event: str,
        report: StageReport | None = None,
        exc: PivotError | None = None,
        **data: Any,
    ) -> None:
        self.on_event(WatchEvent(event, data, report, exc))

    # -- the dispatcher thread -------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            paths = self._queue.get()
            if paths is None:
                return
            while True:  # the other watcher's part of the same burst, if there is one
                try:
                    more = self._queue.get(timeout=SETTLE if self._watcher.trees else 0)
                except queue.Empty:
                    break
                if more is None:
                    return
                paths |= more
            self._note(paths)

    def _note(self, paths: set[str]) -> None:
        """Classify changed paths; halt a run for code or inputs, cancel stages whose own
        inputs changed (outputs change during a run: Pivot writes them). No paths: the
        watcher failed and may have missed changes, so everything is looked at again."""
        prefix = str(self.root) + os.sep
        with self._lock:
            watch = self._watch
            if watch is None:
                return
            found = {} if paths else {"": FOLDER}
            for path in paths:
                rel = "" if path == str(self.root) else path.removeprefix(prefix)
                if rel == path:
                    continue
                kind = watch.classify(rel.replace(os.sep, "/"))
                if kind is not None:
                    found[rel] = kind
            if not found:
                return
            self._pending.update(found)
            self._changed.notify_all()
            runner = self._runner
        if runner is None or not {CODE, INPUT} & set(found.values()):
            return
        runner.halt()
        inputs = [rel for rel, kind in found.items() if kind == INPUT]
        for stage_id, decision in runner.running().items():
            dep = self._changed_dep(decision, inputs)
            if dep is not None:
                runner.cancel(stage_id, f"its input {dep} changed while it ran")

    def _changed_dep(self, decision: Decision, inputs: list[str]) -> str | None:
        for dep, planned in decision.deps.items():
            if any(rel == dep or rel.startswith(dep + "/") for rel in inputs):
                try:
                    now = self._thread_hasher.hash_path(dep)
                except (OSError, PivotError):
                    now = None
                if now is None or now.hash != planned:
                    return dep
        return None


def serve(request: WatchRequest, on_event: Callable[[WatchEvent], None]) -> None:
    """`pivot run --watch`: see `Session`."""
    from pivot.cache.workspace import open_workspace

    ws = open_workspace()
    try:
        Session(ws, request, on_event).serve()
    finally:
        ws.state.close()
