"""`pivot run --watch --json` as a real process on the spec's parent/child project: real
edits, real file-system events, the events and outputs a user (or an editor) checks."""

from __future__ import annotations

import pathlib

import pytest
from spec_projects import CHILD_PIPELINE, PARENT_CHILD
from support import write_files
from watch_support import Watching, edit, wait_for_file, wait_until_gone

# The spec's parent pipeline, reading an input through a helper, with a param.
PARENT = """
import pathlib
from typing import Annotated, TypedDict
import pivot
import helpers
pipeline = pivot.Pipeline("data_prep")
class PrepareOutputs(TypedDict):
    data: Annotated[pathlib.Path, pivot.Out("shared/data.csv", pivot.loaders.PathOnly())]
def prepare(
    raw: Annotated[pathlib.Path, pivot.Dep("raw.txt", pivot.loaders.PathOnly())],
    params: dict,
) -> PrepareOutputs:
    values = [helpers.scale(int(v), params["factor"]) for v in raw.read_text().split()]
    out = pathlib.Path("shared/data.csv")
    out.parent.mkdir(exist_ok=True)
    out.write_text("id,value\\n" + "".join(f"{i},{v}\\n" for i, v in enumerate(values)))
    return PrepareOutputs(data=out)
pipeline.register(prepare, params={"factor": 1})
"""
HELPERS = """
def scale(value, factor):
    return value * factor
"""


@pytest.fixture
def watching():
    started: list[Watching] = []

    def start(cwd: pathlib.Path, *args: str) -> Watching:
        started.append(Watching(cwd, *args))
        return started[-1]

    yield start
    for watch in started:
        watch.close()


def _ran(watch: Watching, start: int) -> tuple[int, list[str]]:
    """The last run before the watch is idle after the next run from `start` on, and the
    stages started since `start`: an edit whose events arrive in two bursts (a loaded machine) halts the
    first run and plans again, and the edit is handled only once the watch is idle."""
    first = watch.finished_run(start)
    idle = watch.wait_for(lambda e: e["event"] == "idle", first)
    end = max(i for i in range(first, idle) if watch.events[i]["event"] == "run_finished")
    return end, watch.started(start, idle)


def test_edits_rerun_what_they_affect_across_pipelines(project, watching) -> None:
    write_files(project, {**PARENT_CHILD, "pipeline.py": PARENT, "helpers.py": HELPERS})
    write_files(project, {"raw.txt": "100 200 300\n"})
    data = project / "shared" / "data.csv"
    report = project / "analysis" / "report.txt"
    watch = watching(project / "analysis")

    end, ran = _ran(watch, 0)
    assert ran == ["data_prep/prepare", "analysis/analyze"], watch.report()
    first = watch.wait_for(lambda e: e["event"] == "watching")
    assert watch.events[first]["pipelines"] == 2
    assert report.read_text() == "Processed 3 records\n"

    # The parent's input: the parent's stage, then the child's, in that order.
    mark = watch.mark()
    edit(project / "raw.txt", "1 2 3 4\n")
    change = watch.wait_for(lambda e: e["event"] == "change", mark)
    assert watch.events[change]["paths"] == ["raw.txt"]
    end, ran = _ran(watch, change)
    assert ran == ["data_prep/prepare", "analysis/analyze"], watch.report()
    assert report.read_text() == "Processed 4 records\n"

    # A comment in the helper: reloaded, nothing runs, nothing is rewritten.
    before = data.stat().st_mtime_ns
    mark = watch.mark()
    edit(project / "helpers.py", "# scaling\n" + HELPERS)
    change = watch.wait_for(lambda e: e["event"] == "change", mark)
    assert watch.events[change]["reload"] is True
    end, ran = _ran(watch, change)
    assert ran == [], watch.report()
    assert watch.events[end]["skipped"] == 2
    assert data.stat().st_mtime_ns == before

    # The helper's code, same results: only the stage that uses it runs.
    mark = watch.mark()
    edit(project / "helpers.py", HELPERS.replace("value * factor", "factor * value"))
    end, ran = _ran(watch, watch.wait_for(lambda e: e["event"] == "change", mark))
    assert ran == ["data_prep/prepare"], watch.report()
    assert data.read_text() == "id,value\n0,1\n1,2\n2,3\n3,4\n"

    # A param in the parent's pipeline file.
    mark = watch.mark()
    edit(project / "pipeline.py", PARENT.replace('{"factor": 1}', '{"factor": 10}'))
    end, ran = _ran(watch, watch.wait_for(lambda e: e["event"] == "change", mark))
    assert ran == ["data_prep/prepare", "analysis/analyze"], watch.report()
    assert data.read_text() == "id,value\n0,10\n1,20\n2,30\n3,40\n"

    # The child's pipeline file with a syntax error: said, nothing runs, still watching.
    mark = watch.mark()
    edit(project / "analysis" / "pipeline.py", CHILD_PIPELINE + "def broken(:\n")
    error = watch.wait_for(lambda e: e["event"] in ("error", "run_finished"), mark)
    assert watch.events[error]["event"] == "error"
    assert "analysis/pipeline.py" in watch.events[error]["message"]
    assert "syntax error" in watch.events[error]["message"]
    # ... and fixed: the new code runs.
    edit(project / "analysis" / "pipeline.py", CHILD_PIPELINE.replace("Processed", "Counted"))
    end, ran = _ran(watch, error)
    assert ran == ["analysis/analyze"], watch.report()
    assert report.read_text() == "Counted 4 records\n"

    assert watch.stop() == 0
    assert watch.stderr.count("Traceback") == 0


def test_a_module_saved_again_unchanged_is_no_change(project, watching) -> None:
    write_files(project, {**PARENT_CHILD, "pipeline.py": PARENT, "helpers.py": HELPERS})
    write_files(project, {"raw.txt": "100 200 300\n"})
    watch = watching(project / "analysis")
    _ran(watch, 0)
    mark = watch.mark()
    edit(project / "helpers.py", "# scaling\n" + HELPERS)  # a comment: reloaded, nothing runs
    _, ran = _ran(watch, watch.wait_for(lambda e: e["event"] == "change", mark))
    assert ran == [], watch.report()
    mark = watch.mark()
    edit(project / "helpers.py", "# scaling\n" + HELPERS)  # saved again, same text
    edit(project / "raw.txt", "1 2\n")
    change = watch.wait_for(lambda e: e["event"] == "change", mark)
    # The save gave no reload and no run of its own: the first change is the input's.
    assert watch.events[change]["paths"] == ["raw.txt"], watch.report()
    assert watch.events[change]["reload"] is False
    _, ran = _ran(watch, change)
    assert ran == ["data_prep/prepare", "analysis/analyze"], watch.report()
    assert watch.stop() == 0


DIR_PIPELINE = """
import pathlib
from typing import Annotated
import pivot
pipeline = pivot.Pipeline("files")
def count(
    inputs: Annotated[pathlib.Path, pivot.Dep("inputs", pivot.loaders.PathOnly())],
) -> Annotated[str, pivot.Out("count.txt", pivot.loaders.Text())]:
    return f"{len(list(inputs.iterdir()))}\\n"
def other(
    src: Annotated[str, pivot.Dep("other.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("other.out", pivot.loaders.Text())]:
    return src.upper()
pipeline.register(count)
pipeline.register(other)
"""


def test_a_burst_of_writes_gives_one_run(project, watching) -> None:
    write_files(project, {"pipeline.py": DIR_PIPELINE, "other.txt": "a\n", "inputs/0": "0"})
    watch = watching(project)
    _ran(watch, 0)
    mark = watch.mark()
    for i in range(200):  # like a `git checkout` touching many files
        (project / "inputs" / f"f{i}").write_text(str(i))
    done = watch.wait_for(
        lambda e: e["event"] == "stage_finished" and e["stage"] == "files/count", mark
    )
    end = watch.finished_run(done)
    assert (project / "count.txt").read_text() == "201\n"
    # Another change after it: the burst gave no second run before that one.
    edit(project / "other.txt", "b\n")
    after = watch.wait_for(
        lambda e: e["event"] == "change" and e["paths"] == ["other.txt"], end + 1
    )
    last, ran_after = _ran(watch, after)
    assert ran_after == ["files/other"], watch.report()
    finished = watch.between(mark, last, "stage_finished")
    ran = [e["stage"] for e in finished if e["status"] == "ran"]
    assert ran.count("files/count") == 1, watch.report()
    # (On a starved machine, writes 50 ms apart are two bursts: the first run is then
    # cancelled, never failed.)
    failed = [e for e in watch.between(mark, last, "stage_failed") if e["status"] == "failed"]
    assert not failed, watch.report()
    assert watch.stop() == 0


SLOW_PIPELINE = """
import pathlib
import time
from typing import Annotated
import pivot
pipeline = pivot.Pipeline("slow")
def slow(
    src: Annotated[str, pivot.Dep("in.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    if src.strip() == "bad":
        raise ValueError("bad input")
    pathlib.Path("out.txt").write_text("partial " + src)  # half-written until `go` exists
    while not pathlib.Path("go").exists():
        time.sleep(0.01)
    return src.upper()
def after(
    src: Annotated[str, pivot.Dep("out.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("after.txt", pivot.loaders.Text())]:
    return src + "!"
pipeline.register(slow)
pipeline.register(after)
"""


def test_a_change_to_a_running_stage_input_cancels_and_reruns_it(project, watching) -> None:
    write_files(project, {"pipeline.py": SLOW_PIPELINE, "in.txt": "one\n"})
    out = project / "out.txt"
    watch = watching(project)
    started = watch.wait_for(lambda e: e["event"] == "stage_started")
    assert watch.events[started]["stage"] == "slow/slow"

    edit(project / "in.txt", "two\n")
    cancelled = watch.wait_for(lambda e: e["event"] == "stage_failed", started)
    event = watch.events[cancelled]
    assert (event["stage"], event["status"]) == ("slow/slow", "cancelled")
    assert "in.txt" in event["error"]
    assert not (out.exists() and out.read_text() == "partial one\n")  # removed

    again = watch.wait_for(lambda e: e["event"] == "stage_started", cancelled)
    assert watch.events[again]["stage"] == "slow/slow"
    (project / "go").write_text("")
    end, ran = _ran(watch, again - 1)
    assert ran == ["slow/slow", "slow/after"], watch.report()
    assert out.read_text() == "TWO\n"
    assert (project / "after.txt").read_text() == "TWO\n!"

    # A failing stage: its downstream waits, the watch goes on; fixed, both run.
    edit(project / "in.txt", "bad\n")
    failed = watch.wait_for(lambda e: e["event"] == "stage_failed", end)
    assert (watch.events[failed]["status"], watch.events[failed]["stage"]) == (
        "failed",
        "slow/slow",
    )
    assert "bad input" in watch.events[failed]["error"]
    end = watch.finished_run(failed)
    assert watch.events[end]["failed"] == 1
    assert not out.exists()
    edit(project / "in.txt", "three\n")
    end, ran = _ran(watch, end + 1)
    assert ran == ["slow/slow", "slow/after"], watch.report()
    assert (project / "after.txt").read_text() == "THREE\n!"
    assert watch.stop() == 0


def test_ctrl_c_during_a_stage_leaves_no_process_and_no_partial_output(project, watching) -> None:
    write_files(project, {"pipeline.py": SLOW_PIPELINE, "in.txt": "one\n"})
    watch = watching(project)
    watch.wait_for(lambda e: e["event"] == "stage_started")
    assert wait_for_file(project / "out.txt")  # the stage is half-way
    assert watch.interrupt() == 130
    assert wait_until_gone(watch.pgid) == []
    assert not (project / "out.txt").exists()
    assert not (project / ".pivot" / "stages" / "slow" / "slow.lock").exists()
    assert "Interrupted" in watch.stderr


def test_ctrl_c_while_idle_leaves_no_process(project, watching) -> None:
    write_files(project, PARENT_CHILD)
    watch = watching(project / "analysis")
    end = watch.finished_run()
    watch.wait_for(lambda e: e["event"] == "idle", end)
    assert watch.stop() == 0
    assert wait_until_gone(watch.pgid) == []
    assert (project / "analysis" / "report.txt").read_text() == "Processed 3 records\n"
