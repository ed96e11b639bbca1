"""The work behind `run`, `status`, `verify`, `list` and `checkout`: each returns what it
found or did; the CLI renders it."""

from __future__ import annotations

import logging
import os
import posixpath
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot import config, fingerprint
from pivot._gcpause import collector_paused
from pivot.cache import tracked
from pivot.cache.checkout import LinkMode
from pivot.cache.edits import refuse_unsaved_edits
from pivot.cache.workspace import open_workspace
from pivot.discover.scope import Scope, resolve_scope
from pivot.errors import CacheCorrupt, DamagedBlob, DefinitionError, PivotError
from pivot.project import TRACKED_DIR
from pivot.run import lock_memo, lock_prefetch, lockfile, verdict_memo
from pivot.run.edited import EditedOutputs, annotate, edited_outputs
from pivot.run.plan import PENDING, RESTORE, RUN, SKIP
from pivot.run.remote_view import RemoteAccess
from pivot.run.scheduler import (
    RAN,
    RESTORED,
    SKIPPED,
    Runner,
    RunOptions,
    RunReport,
    StageReport,
    choose_materialized,
    plan_graph,
)
from pivot.services import noop_replay
from pivot.services.ignored import GitIgnored
from pivot.services.scope import (
    check_disjoint_data,
    loaded_data_in_scope,
    scope_for,
    scope_locks,
)

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.project import Project
    from pivot.remote.transfer import TransferSummary
    from pivot.run.plan import Decision
    from pivot.services.elsewhere import Elsewhere


class RunResult:
    """A run (or with `dry_run`, its plan: `decisions` and `edits`, and no `report`), the number of
    stages in scope, and what `push_outputs` needs afterwards."""

    __slots__ = ("decisions", "edits", "project", "remote", "report", "scope", "total")

    def __init__(self, project: Project, scope: Scope, remote: RemoteAccess, total: int) -> None:
        self.project = project
        self.scope = scope
        self.remote = remote
        self.total = total
        self.report: RunReport | None = None
        self.decisions: dict[str, Decision] | None = None
        self.edits = EditedOutputs({}, {})  # with `dry_run`: edited outputs, who reads them


def run(
    targets: tuple[str, ...],
    all_pipelines: bool,
    force: bool,
    dry_run: bool,
    options: RunOptions,
    remote_name: str | None,
    use_remote: bool,
    push: bool,
    on_stage: Callable[[StageReport], None] = lambda report: None,
    view: str | None = None,
) -> RunResult:
    """Plan the scope and run it (`on_stage` hears each stage as it settles); with
    `dry_run`, only plan. `push` only checks here that a remote is configured: the caller
    pushes with `push_outputs` once the run succeeded. `view` (one of
    `verdict_memo.VIEWS`) is how the caller prints this run, for a replay of its no-op
    (`services.noop_replay`); None: no replay entry."""
    loaded = noop_replay.take(targets, all_pipelines)  # the pipelines, if loaded already
    ws = open_workspace() if loaded is None else loaded.ws
    project = ws.project
    prefetch = lock_prefetch.take(project)  # works while the pipelines load
    try:
        lockfile.use_marker(project.stages_dir, project.tmp_dir)
        if options.link is None:
            options.link = LinkMode(config.link_mode(ws.project))
        if loaded is not None:
            scope = loaded.scope
        else:
            with collector_paused():
                scope = resolve_scope(ws, targets, all_pipelines)
        forced = set(scope.targets) if force else set()
        remote = RemoteAccess(ws.project, remote_name)
        configured = (use_remote or push) and remote.is_configured()
        if push and not configured:
            raise DefinitionError(
                "--push needs a remote, and this project has none.", hint="add-default-remote"
            )
        options.remote = remote if configured and use_remote else None
        options.targets = set(scope.targets)
        _choose_executor(ws.project, options, use_remote, configured)
        options.discard_edits = force
        result = RunResult(ws.project, scope, remote, len(scope.graph.stages))
        memo_ok = not (dry_run or force or push or options.executor == "dask")
        settings = [targets, all_pipelines, remote_name, use_remote, configured]
        digest = loaded.digest if loaded is not None else None  # if the replay made it
        verdict = None  # the memo's key: digested only when there is a memo to check
        if memo_ok and verdict_memo.present(project.tmp_dir):
            verdict = _verdict_key(ws, scope, options, settings, digest)
            memo_ok = verdict is not None
            check = verdict is not None and (loaded is None or not loaded.missed)
            if check and _replayed(ws, scope, verdict.key, result, on_stage):
                return result  # (a miss the replay found is not checked again)
        if prefetch is not None:
            prefetch.finish()
        else:
            with collector_paused():  # the memo's locks live until the plan takes them
                lock_memo.load(project.stages_dir, project.tmp_dir)
        if dry_run:
            _, result.decisions = Runner(ws, scope.graph, options).plan(forced, fork=False)
            result.edits = edited_outputs(ws, scope.graph, result.decisions)
            if force:  # the run would discard them
                result.edits.unsaved.clear()
            return result
        with ws.project.exclusive("run"):
            verdict_memo.invalidate(project.tmp_dir)  # before anything changes
            marker = verdict_memo.Marker(project.tmp_dir) if memo_ok else None
            warnings = _WarningCount()
            with collector_paused():
                ignored = GitIgnored(ws.project, scope.discovery, all_pipelines)
            runner = Runner(
                ws,
                scope.graph,
                options,
                on_stage=on_stage,
                locks=ignored.locks,
                pause_collector=True,
            )
            try:
                result.report = runner.run(forced)
                ignored.update(
                    out.path
                    for report in result.report.stages
                    if report.status in (RAN, RESTORED)
                    for out in scope.graph.stages[report.stage_id].outs
                )
            finally:
                warnings.close()
            lock_memo.store(project.stages_dir, project.tmp_dir)
            quiet = not warnings.count and not ignored.consulted_elsewhere
            if marker is not None and quiet and _no_op(scope, result):
                verdict = verdict or _verdict_key(ws, scope, options, settings, digest)
                if verdict is not None:
                    replay = _replay_entry(ws, targets, all_pipelines, view, verdict.digest)
                    _store_verdict(ws, scope, result, verdict.key, marker, ignored, replay)
        return result
    finally:
        if prefetch is not None:
            prefetch.cancel()
        ws.state.close()


class _WarningCount(logging.Handler):
    """Counts the warnings Pivot's loggers raise while it is attached (a run that warned
    is not a pure no-op: its verdict is not kept)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        logging.getLogger("pivot").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1

    def close(self) -> None:
        logging.getLogger("pivot").removeHandler(self)
        super().close()


class _Verdict(NamedTuple):
    """The verdict memo's key for a run, and the definition digest it holds."""

    key: str
    digest: str


def _verdict_key(
    ws: Workspace, scope: Scope, options: RunOptions, settings: list[Any], digest: str | None
) -> _Verdict | None:
    """The verdict memo's key for this run (`run.verdict_memo`), with the definition
    digest computed here unless given, or None when the stages hold a value too large to
    digest."""
    graph = scope.graph
    link = options.link.value if options.link is not None else None
    settings = [
        *settings,
        options.jobs,
        options.keep_going,
        link,
        options.fallback,
        options.materialize_all,
        options.executor,
        options.scheduler,
        options.retries,
        sorted(options.targets),
    ]
    cwd = os.path.relpath(os.getcwd(), ws.project.root)
    if digest is None:
        try:
            digest = verdict_memo.definition_digest(
                [graph.stages[sid] for sid in graph.order()], ws.project.root
            )
        except Exception:  # a value that cannot be digested (too large, or raising): no memo
            return None
    return _Verdict(verdict_memo.command_key(settings, cwd, digest), digest)


def _replay_entry(
    ws: Workspace,
    targets: tuple[str, ...],
    all_pipelines: bool,
    view: str | None,
    digest: str,
) -> verdict_memo.Replay | None:
    """The memo's replay entry for this command line (`services.noop_replay`), or None
    when this process was not started as the `pivot` program, prints no known view or
    names a target that is not text (undecodable bytes: the memo keeps UTF-8 text)."""
    words = noop_replay.command_line()
    if words is None or view not in verdict_memo.VIEWS:
        return None
    try:
        "".join(targets).encode("utf-8")
    except UnicodeEncodeError:
        return None
    cwd = os.path.relpath(os.getcwd(), ws.project.root)
    return verdict_memo.Replay(
        verdict_memo.argv_key(words, cwd),
        verdict_memo.argv_key(words, cwd, digest),
        tuple(targets),
        all_pipelines,
        view,
    )


def _replayed(
    ws: Workspace,
    scope: Scope,
    verdict: str,
    result: RunResult,
    on_stage: Callable[[StageReport], None],
) -> bool:
    """On a verdict memo hit, report every stage up to date as the full no-op does (in
    run order, through `on_stage`) and write nothing; False on a miss."""
    with ws.project.exclusive("run", sweep=False):
        memo = verdict_memo.load(ws.project.tmp_dir)
        if not verdict_memo.hit(memo, verdict, lambda rel: noop_replay.folder_hash(ws, rel)):
            return False
    report = RunReport()
    for sid in scope.graph.order():
        stage_report = StageReport(sid, SKIPPED)
        report.stages.append(stage_report)
        on_stage(stage_report)
    result.report = report
    return True


def _no_op(scope: Scope, result: RunResult) -> bool:
    """Whether the run found every stage of the scope up to date and did nothing else."""
    report = result.report
    if report is None or len(report.stages) != len(scope.graph.stages):
        return False
    return all(s.status == SKIPPED and not s.detail for s in report.stages)


def _store_verdict(
    ws: Workspace,
    scope: Scope,
    result: RunResult,
    verdict: str,
    marker: verdict_memo.Marker,
    ignored: GitIgnored,
    replay: verdict_memo.Replay | None,
) -> None:
    """Keep the verdict of a run that found every stage up to date and did nothing else,
    when every file and folder it rests on is settled under the command's marker."""
    graph = scope.graph
    project = ws.project
    root = str(project.root)
    recorder = verdict_memo.Recorder(marker)
    sources: set[str] = set()
    try:
        for sid in graph.order():
            stage = graph.stages[sid]
            lock = lockfile.read_lock(project.stages_dir, sid)
            if lock is None:
                return
            recorder.add(str(lockfile.lock_path(project.stages_dir, sid)))
            for dep in stage.deps:
                if not recorder.add_workspace_path(root, dep.path, lock.deps.get(dep.path)):
                    return
            for out in stage.outs:
                recorded = lock.outs.get(out.path)
                folder = recorded["hash"] if recorded is not None else None
                if not recorder.add_workspace_path(root, out.path, folder):
                    return
            sources |= fingerprint.source_files(stage.func, project.root, stage.params)
        records = tracked.load_all(project)
    except (OSError, PivotError):
        return
    recorder.add(str(project.stages_dir), follow=False)
    for name in sorted({loaded.name for loaded in scope.discovery.pipelines.values()}):
        recorder.add_tree(str(project.stages_dir / name))
    recorder.add_tree(str(project.pivot_dir / TRACKED_DIR))
    for path in config.config_paths(project):
        recorder.add(str(path))
    declared = [
        out.path
        for loaded in scope.discovery.pipelines.values()
        for stage in loaded.stages.values()
        for out in stage.outs
    ]
    folders = {posixpath.dirname(p) for p in [*declared, *records, *ignored.before]}
    for folder in sorted(folders):
        recorder.add(os.path.join(root, folder, ".gitignore"))
    modules = verdict_memo.module_files()
    for loaded in scope.discovery.pipelines.values():
        modules.add(str(loaded.file))
        sources |= loaded.modules
    for file in sorted(sources | modules):
        recorder.add(file)
    for entry in sys.path:
        recorder.add(os.path.abspath(entry or os.curdir))
    if recorder.settled:
        data = recorder.encode(verdict, verdict_memo.folder_key(project.tmp_dir), modules, replay)
        verdict_memo.write(project.tmp_dir, data)


def _choose_executor(
    project: Project, options: RunOptions, use_remote: bool, configured: bool
) -> None:
    """Fill the executor settings the command line left open from the config, and refuse
    a Dask run that cannot work before anything is planned or submitted."""
    from pivot import config

    settings = config.executor_config(project)
    options.executor = options.executor or settings.executor
    options.scheduler = options.scheduler or settings.scheduler
    options.retries = settings.retries
    if options.executor != "dask":
        return
    from pivot.run.dask import require_distributed

    require_distributed()
    if not options.scheduler:
        raise DefinitionError(
            "The Dask executor needs the scheduler's address: pass --scheduler "
            "tcp://HOST:PORT, or set `dask: {scheduler: tcp://HOST:PORT}` in "
            ".pivot/config.yaml."
        )
    if not use_remote:
        raise DefinitionError(
            "--no-remote cannot be used with the Dask executor: the remote is the only "
            "storage the workers share with this machine."
        )
    if not configured:
        raise DefinitionError(
            "The Dask executor needs a remote (the workers read inputs from it and write "
            "outputs to it), and this project has none.",
            hint="add-default-remote",
        )


def push_outputs(result: RunResult) -> TransferSummary:
    """Send the outputs and run records of every stage in the run's scope to its remote."""
    return result.remote.push(scope_locks(result.project, result.scope), [])


class StatusResult(NamedTuple):
    """Each stage's row, and the stale stages of other pipelines (None with targets or
    `--all`, where every pipeline asked for is in the rows)."""

    rows: list[dict[str, Any]]
    elsewhere: Elsewhere | None


# `status`'s action for a stage it cannot decide offline (see `Decision.not_local`).
NOT_LOCAL = "not-local"


def status(
    targets: tuple[str, ...], all_pipelines: bool, remote_name: str | None, with_remote: bool
) -> StatusResult:
    """Each stage's decision and reasons; with the remote, where each output lives; and
    for the current pipeline, what is stale in the others (`stale_elsewhere`)."""
    ws = open_workspace()
    try:
        scope = resolve_scope(ws, targets, all_pipelines)
        if with_remote:
            remote = _reachable_remote(ws, remote_name)
        else:
            offline = RemoteAccess(ws.project, remote_name)
            offline.may_contact = False
            remote = offline if offline.is_configured() else None
        _, decisions = plan_graph(ws, scope.graph, set(), remote)
        choose_materialized(ws, scope.graph, decisions, RunOptions(targets=set(scope.targets)))
        edits = edited_outputs(ws, scope.graph, decisions)
        root = ws.project.root
        rows = []
        for d in decisions.values():
            kept = d.kept_up_to_date
            row = {
                "stage": d.stage.id,
                "file": str(d.stage.source.relative_to(root)),
                "action": SKIP if kept else d.action,
                "reasons": [] if kept else list(d.reasons),
            }
            if kept:
                row["kept"] = d.kept
            annotate(row, d, edits)
            if d.absent_deps and not kept and d.action in (RUN, PENDING):
                row["missing"] = list(d.absent_deps)
            if d.not_local and (kept or d.action in (SKIP, RESTORE)):
                row["action"] = NOT_LOCAL  # the verdict rested on the lock's own hashes
                row.pop("kept", None)
                row["reasons"] = [
                    f"dep {dep} lies in the tracked folder {folder}, whose manifest is not in "
                    f"the local cache: whether it changed is not known"
                    for dep, folder in d.not_local
                ]
                row["not_local"] = [dep for dep, _ in d.not_local]
            if with_remote:
                recorded = d.lock.outs if d.lock else {}
                row["outputs"] = {
                    path: _location(ws, remote, out) for path, out in sorted(recorded.items())
                }
            rows.append(row)
        elsewhere = None
        if not targets and not all_pipelines:
            from pivot.services.elsewhere import stale_elsewhere  # `status` alone needs it

            elsewhere = stale_elsewhere(ws, scope, remote is not None)
        return StatusResult(rows, elsewhere)
    finally:
        ws.state.close()


def tracked_changes() -> list[dict[str, str]]:
    """Tracked data whose workspace content is not its record's: `modified` (track it
    again to record it) or `missing` (restorable from the cache or the remote)."""
    ws = open_workspace()
    try:
        rows = []
        for path, record in sorted(tracked.load_all(ws.project).items()):
            found = ws.hasher.hash_path(path)
            if found is None:
                rows.append({"tracked": path, "state": "missing"})
            elif found.hash != record.hash:
                rows.append({"tracked": path, "state": "modified"})
        ws.state.commit()
        return rows
    finally:
        ws.state.close()


def _reachable_remote(ws, remote_name: str | None) -> RemoteAccess:
    remote = RemoteAccess(ws.project, remote_name)
    if not remote.is_configured():
        raise DefinitionError("This project has no remote.", hint="add-default-remote")
    remote.contents()
    return remote


def _location(ws, remote: RemoteAccess, out: dict[str, Any]) -> str:
    if not ws.cache.missing(out["hash"], out["kind"]):
        return "local"
    return "remote" if remote.has_output(out["hash"]) else "missing"


class Problem(NamedTuple):
    """What stops a CI gate: a stage not up to date (`stale`), or an output absent from the
    remote; `what` names it."""

    what: str
    stale: bool


def verify(
    targets: tuple[str, ...], all_pipelines: bool, remote_name: str | None
) -> tuple[list[Problem], int, str]:
    """Problems that stop a CI gate: stale stages and outputs absent from the remote."""
    ws = open_workspace()
    try:
        scope = resolve_scope(ws, targets, all_pipelines)
        remote = _reachable_remote(ws, remote_name)
        _, decisions = plan_graph(ws, scope.graph, set(), remote)
        problems = []
        for decision in decisions.values():
            sid = decision.stage.id
            if decision.action != SKIP and not decision.matches_lock:
                why = "; ".join(decision.reasons)
                problems.append(Problem(f"{sid} is not up to date ({why})", stale=True))
                continue
            for path, out in sorted(decision.lock.outs.items() if decision.lock else ()):
                if not remote.has_output(out["hash"]):
                    problems.append(Problem(f"{path} ({sid}) is not on the remote", stale=False))
        return problems, len(decisions), remote.display
    finally:
        ws.state.close()


def list_stages(targets: tuple[str, ...], all_pipelines: bool) -> list[dict[str, Any]]:
    """Each stage in scope, in run order, with its file, deps and outs."""
    scope = scope_for(targets, all_pipelines)
    root = scope.discovery.project.root
    return [
        {
            "stage": stage.id,
            "file": str(stage.source.relative_to(root)),
            "deps": [d.path for d in stage.deps],
            "outs": [o.path for o in stage.outs],
        }
        for stage in (scope.graph.stages[sid] for sid in scope.graph.order())
    ]


def checkout(
    targets: tuple[str, ...], all_pipelines: bool, link: str | None, force: bool = False
) -> tuple[int, int]:
    """Place every locked output and tracked data of the scope (`link`: default
    `cache.link`); returns (placed, already in place). Edits that exist nowhere else are
    refused unless `force`."""
    ws = open_workspace()
    link = config.link_mode(ws.project, link)
    try:
        found = loaded_data_in_scope(ws, targets, all_pipelines)
        locks, records = found.data
        check_disjoint_data(locks, records)
        missing = []
        wanted = []
        for lock in [*locks, *records]:
            sid = lock.stage_id
            for path, out in lock.outs.items():
                what = f"the output of {sid}"
                ws.project.write_path(path, what)  # refused before anything is placed
                if ws.cache.missing(out["hash"], out["kind"]):
                    missing.append(f"{path} ({sid})")
                else:
                    wanted.append((path, out, what))
        if missing:
            raise CacheCorrupt(
                f"These outputs are not in the local cache: {', '.join(missing)}.",
                hint="pull-or-run",
            )
        if not force:
            refuse_unsaved_edits(ws, [(path, out) for path, out, _ in wanted])
        with ws.project.exclusive("checkout"):
            ignored = GitIgnored(ws.project, found.discovery, found.complete)
            counts = _place_outputs(ws, wanted, LinkMode(link))
            ignored.update(path for path, _, _ in wanted)
        return counts
    finally:
        ws.state.close()


def _place_outputs(ws, wanted: list[tuple[str, dict, str]], link: LinkMode) -> tuple[int, int]:
    """Place each output; a damaged cache object is fetched again if a remote is set."""
    remote = RemoteAccess(ws.project, None)
    try:
        refetch = _refetcher(remote) if remote.is_configured() else None
    except PivotError:  # several remotes and no default: nowhere to fetch from
        refetch = None
    try:
        placed = sum(ws.place_output(path, out, link, what, refetch) for path, out, what in wanted)
    except DamagedBlob as exc:
        exc.hint = "run-or-pull"
        raise
    return placed, len(wanted) - placed


def _refetcher(remote: RemoteAccess):
    """Fetch the blobs of one output (hash, kind) from `remote` again."""

    def refetch(digest: str, kind: str) -> None:
        remote.fetch([(digest, kind)])

    return refetch
