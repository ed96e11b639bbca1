"""A `pivot run` that repeats a remembered no-op, answered before click and the command
modules load.

The verdict memo (`run.verdict_memo`) of a run started as a program holds a replay entry:
the key of its command line, the scope it asked for and how it printed. `attempt` takes
the same command line, checks the entry's key of the command line before the pipelines
load, then loads them as the full command does, digests them, and checks the memo under
the project's command lock as the full command's own replay does (`verdict_memo.hit`). A
hit that logged nothing returns what to print. Anything else is a miss for the full
command, which runs next in this process: when the pipelines were loaded here, `take`
hands it the workspace and the scope (or the error loading them raised, and the warnings
logged while loading or checking them), so that no pipeline file is executed twice by one
command, and says whether the memo was checked."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot.run import verdict_memo

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.define.stage import StageSpec
    from pivot.discover.scope import Scope


class Replayed(NamedTuple):
    """A hit: the stages up to date, in run order, and how the command prints."""

    stage_ids: list[str]
    view: str


class Loaded(NamedTuple):
    """What `attempt` loaded for the full command: the workspace, the scope, whether the
    memo was checked against them and missed (the full command need not check it), and
    their definition digest if it was computed (`verdict_memo.definition_digest`)."""

    ws: Workspace
    scope: Scope
    missed: bool
    digest: str | None


class _Handover(NamedTuple):
    targets: tuple[str, ...]
    all_pipelines: bool
    ws: Workspace
    loaded: Loaded | None
    error: BaseException | None
    records: list[logging.LogRecord]


_state: dict[str, Any] = {"argv": None, "handover": None}


def attempt(argv: list[str]) -> Replayed | None:
    """Replay the command `argv` (the program's name, then its words) from the verdict
    memo, or None: the full command runs (and `argv` is kept for the memo it may write)."""
    _state["argv"] = list(argv[1:])
    try:
        from pivot.project import Project

        project = Project.discover()
        seen = verdict_memo.file_key(project.tmp_dir)  # before it is read
        memo = verdict_memo.load(project.tmp_dir)
        if memo is None or memo.replay is None:
            return None
        cwd = os.path.relpath(os.getcwd(), project.root)
        if memo.replay.before != verdict_memo.argv_key(argv[1:], cwd):
            return None
        from pivot.cache.workspace import workspace_of

        ws = workspace_of(project)
    except Exception:  # no project, no usable memo: the full command finds out and says
        return None
    try:
        return _check(ws, memo, seen, argv[1:], cwd)
    except BaseException:
        ws.state.close()
        raise


def _check(
    ws: Workspace, memo: verdict_memo.Memo, seen: tuple[int, ...], words: list[str], cwd: str
) -> Replayed | None:
    """Load the pipelines, then check `memo` (read when its file had the stat key `seen`)
    under the command lock, where that file must still be the one read."""
    replay = memo.replay
    assert replay is not None
    from pivot._gcpause import collector_paused
    from pivot.discover.scope import resolve_scope

    records = _Records()
    logger = logging.getLogger("pivot")
    logger.addHandler(records)
    propagate, logger.propagate = logger.propagate, False  # kept, not shown (a root handler)
    try:
        try:
            with collector_paused():
                scope = resolve_scope(ws, replay.targets, replay.all_pipelines)
        except BaseException as exc:  # the full command raises it, where its errors are shown
            _hand_over(replay, ws, None, exc, records.taken)
            return None
        order = scope.graph.order()
        found, digest = None, None  # (None: not checked)
        if not records.taken:
            stages = [scope.graph.stages[sid] for sid in order]
            found, digest = _found(ws, memo, seen, words, cwd, stages)
    finally:
        logger.removeHandler(records)
        logger.propagate = propagate
    if records.taken or found is None:  # shown (or done again) by the full command
        _hand_over(replay, ws, Loaded(ws, scope, False, digest), None, records.taken)
        return None
    if not found:
        _hand_over(replay, ws, Loaded(ws, scope, True, digest), None, [])
        return None
    ws.state.close()
    return Replayed(order, replay.view)


def _found(
    ws: Workspace,
    memo: verdict_memo.Memo,
    seen: tuple[int, ...],
    words: list[str],
    cwd: str,
    stages: list[StageSpec],
) -> tuple[bool | None, str | None]:
    """Whether `memo` holds for `stages` (in run order) now (None: the check failed; the
    full command does the same work and reports what fails), and the definition digest
    if it was computed."""
    digest = None
    try:
        digest = verdict_memo.definition_digest(stages, ws.project.root)
        key = verdict_memo.argv_key(words, cwd, digest)
        with ws.project.exclusive("run", sweep=False):
            found = verdict_memo.file_key(ws.project.tmp_dir) == seen and verdict_memo.hit(
                memo, key, lambda rel: folder_hash(ws, rel)
            )
    except Exception:
        return None, digest
    return found, digest


def folder_hash(ws: Workspace, rel: str) -> str | None:
    """The hash of the folder `rel` now (through its directory snapshot), or None."""
    from pivot.cache.hashing import DIR
    from pivot.errors import PivotError

    try:
        found = ws.hasher.hash_path(rel)
    except (OSError, PivotError):
        return None
    return found.hash if found is not None and found.kind == DIR else None


def _hand_over(
    replay: verdict_memo.Replay,
    ws: Workspace,
    loaded: Loaded | None,
    error: BaseException | None,
    records: list[logging.LogRecord],
) -> None:
    _state["handover"] = _Handover(replay.targets, replay.all_pipelines, ws, loaded, error, records)


def take(targets: tuple[str, ...], all_pipelines: bool) -> Loaded | None:
    """What `attempt` loaded for this scope, if it loaded anything: its warnings are
    logged again now (for the full command's handlers) and its error raised. None when
    nothing was loaded for this scope."""
    handover = _state["handover"]
    _state["handover"] = None
    if handover is None:
        return None
    if (handover.targets, handover.all_pipelines) != (tuple(targets), all_pipelines):
        handover.ws.state.close()
        return None
    for record in handover.records:
        logging.getLogger(record.name).handle(record)
    if handover.error is not None:
        handover.ws.state.close()
        raise handover.error
    return handover.loaded


def command_line() -> list[str] | None:
    """The words of the command line `attempt` was given (None: this process was not
    started as the `pivot` program), for the replay entry of the memo a run writes."""
    return _state["argv"]


class _Records(logging.Handler):
    """Keeps the records the `pivot` logger receives while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.taken: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.taken.append(record)
