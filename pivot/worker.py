"""Executing one stage in a worker process: load deps, call, save outs, cache them."""

from __future__ import annotations

import os
import pathlib
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot.loading import pipeline_context
from pivot.storage.cache import LocalCache, remove_path

if TYPE_CHECKING:
    from pivot.stage import StageSpec

PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parent) + os.sep
_STAGES: dict[str, StageSpec] = {}


def register_stages(stages: dict[str, StageSpec]) -> None:
    """Make stages known to workers; call before the worker processes are forked."""
    _STAGES.clear()
    _STAGES.update(stages)


@dataclass
class Outcome:
    """What a worker sends back: the cached outputs, or the user's error."""

    stage_id: str
    ok: bool
    outs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: list[tuple[str, os.stat_result, str]] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    interrupted: bool = False  # the stage stopped on Ctrl-C (KeyboardInterrupt)


class StageContractError(Exception):
    """The stage ran but broke its declared contract (missing output, bad return)."""


def execute(stage_id: str, root: str, cache_dir: str, tmp_dir: str) -> Outcome:
    """Run one stage in a fresh child forked from this worker, so that no global state
    (module settings, environment, RNG seeds) leaks from one stage into the next and a
    stage that kills its process fails alone."""
    import pickle
    import signal

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the stage, send the outcome, never return
        os.close(read_end)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = 0
        try:
            outcome = _execute(stage_id, pathlib.Path(root), cache_dir, tmp_dir)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child answers Ctrl-C
    try:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, previous)
    if data:
        return pickle.loads(data)
    stage = _STAGES[stage_id]
    return Outcome(
        stage_id,
        False,
        error=(
            f"Stage {stage_id} ({stage.source}) did not finish: its process died "
            f"({_describe_exit(status)}), e.g. killed, out of memory, or os._exit()."
        ),
    )


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _execute(stage_id: str, root: pathlib.Path, cache_dir: str, tmp_dir: str) -> Outcome:
    """Call the stage in its pipeline directory and move its outputs into the cache."""
    import time

    stage = _STAGES[stage_id]
    start = time.perf_counter()
    try:
        for out in stage.outs:
            target = root / out.path
            remove_path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
        with pipeline_context(stage.workdir, root):
            result = _call(stage, root)
            os.chdir(stage.workdir)  # the stage may have changed directory
            _save_outputs(stage, result, root)
        cache = LocalCache(pathlib.Path(cache_dir), pathlib.Path(tmp_dir))
        outs, stats = _store_outputs(stage, root, cache)
    except BaseException as exc:
        seconds = time.perf_counter() - start
        error = _format_error(stage, exc)
        interrupted = isinstance(exc, KeyboardInterrupt)
        return Outcome(stage_id, False, error=error, seconds=seconds, interrupted=interrupted)
    return Outcome(stage_id, True, outs, stats, seconds=time.perf_counter() - start)


def _local(root: pathlib.Path, stage: StageSpec, rel: str) -> pathlib.Path:
    """The tracked project path `rel`, spelled relative to the stage's directory."""
    return pathlib.Path(os.path.relpath(root / rel, stage.workdir))


def _call(stage: StageSpec, root: pathlib.Path) -> Any:
    kwargs = {dep.key: dep.loader.load(_local(root, stage, dep.path)) for dep in stage.deps}
    if stage.params is not None:
        kwargs["params"] = stage.params
    return stage.func(**kwargs)


def _save_outputs(stage: StageSpec, result: Any, root: pathlib.Path) -> None:
    if stage.single_out:
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
            out.loader.save(values[out.key], _local(root, stage, out.path))
    absent = [o.declared for o in stage.outs if not os.path.lexists(root / o.path)]
    if absent:
        raise StageContractError(
            f"did not write its declared output(s) {', '.join(absent)} (relative to "
            f"{stage.workdir}). Write the file(s) or fix the pivot.Out path."
        )


def _store_outputs(
    stage: StageSpec, root: pathlib.Path, cache: LocalCache
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, os.stat_result, str]]]:
    outs: dict[str, dict[str, Any]] = {}
    stats = []
    for out in stage.outs:
        path = root / out.path
        stored, files = cache.add_output(path)
        outs[out.path] = {"hash": stored.hash, "size": stored.size, "kind": stored.kind}
        for inner, digest in files:
            rel = f"{out.path}/{inner}" if inner else out.path
            stats.append((rel, (root / rel).stat(), digest))
    return outs, stats


def _format_error(stage: StageSpec, exc: BaseException) -> str:
    if isinstance(exc, StageContractError):
        return f"Stage {stage.id} ({stage.source}) {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return f"Stage {stage.id} was interrupted."
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not f.filename.startswith(PACKAGE_DIR)]
    lines = traceback.format_list(user or frames)
    detail = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    return (
        f"Stage {stage.id} ({stage.source}) raised {type(exc).__name__}:\n"
        f"Traceback (most recent call last):\n{''.join(lines)}{detail}"
    )
