"""A no-op `pivot run` replayed before click loads (`services.noop_replay`): the real CLI
on real files. The replay loads neither click nor the run's planning modules and prints
what the full no-op prints, in each view. A replay that misses once the pipelines are
loaded hands them to the full command: each pipeline file runs once per command, and
what loading them logged or raised is shown once, as the full command shows it."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from support import (
    COUNTER,
    PYTHONPATH,
    executions,
    loaded_modules,
    verdict_memo_key,
    write_files,
)

from pivot.run import verdict_memo

PIPELINE = (
    """
import os
import pathlib
from typing import Annotated

import pivot
"""
    + COUNTER
    + """
_count("loaded")
K = os.environ.get("K", "1")
if K == "boom":
    raise RuntimeError("K is boom")
pipeline = pivot.Pipeline("p")


def make(
    src: Annotated[str, pivot.Dep("in.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    _count("make")
    return src + K


pipeline.register(make)
"""
)
MEMO_FILE = pathlib.Path(".pivot", "tmp", verdict_memo.NAME)
# What only the full command loads: click, the command modules, the planner, the runner.
FULL_ONLY = ("click", "pivot.cli.main", "pivot.cli.stages", "pivot.run.plan")
FULL_ONLY += ("pivot.run.scheduler", "pivot.services.stages")


def _probe(project: pathlib.Path, *args: str) -> tuple[str, list[str]]:
    """`pivot ARGS` started as the program is, in `project`: its stdout, and which of
    FULL_ONLY it loaded."""
    proc, loaded = loaded_modules(project, FULL_ONLY, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, loaded


def _untimed(text: str) -> str:
    return re.sub(r"\d+\.\d+s?", "T", text)


def _loads(project: pathlib.Path) -> int:
    return executions(project).count("loaded")


@pytest.fixture
def settled(project, pivot) -> pathlib.Path:
    """A project whose `pivot run` has written its memo: the next one is a replay."""
    write_files(project, {"pipeline.py": PIPELINE, "in.txt": "data"})
    pivot("run")
    assert "Every stage is up to date" in pivot("run").stdout
    assert verdict_memo_key(project) is not None, "a no-op run wrote no verdict memo"
    (project / "executions.log").write_text("")  # (removed, the root folder would change)
    return project


@pytest.mark.parametrize("args", [("run",), ("run", "-q"), ("run", "--json")])
def test_a_replay_prints_what_the_full_no_op_prints_without_loading_click(project, args):
    write_files(project, {"pipeline.py": PIPELINE, "in.txt": "data"})
    _probe(project, *args)  # runs the stage
    _probe(project, *args)  # the full no-op: writes the memo
    (project / MEMO_FILE).unlink()
    full, loaded = _probe(project, *args)  # the full no-op again
    assert loaded == sorted(FULL_ONLY)
    before = verdict_memo_key(project)
    assert before is not None
    replayed, loaded = _probe(project, *args)
    assert verdict_memo_key(project) == before, "the no-op was not replayed from the memo"
    assert loaded == []
    assert _untimed(replayed) == _untimed(full)
    if "--json" in args:
        assert json.loads(replayed)["counts"]["up_to_date"] == 1
    else:
        assert "Every stage is up to date (1 stage, " in replayed
    assert ("skipped   p/make" in replayed) == (args == ("run",))
    assert executions(project).count("make") == 1


def test_a_replay_loads_each_pipeline_file_once(settled, pivot):
    before = verdict_memo_key(settled)
    pivot("run")
    assert verdict_memo_key(settled) == before, "the no-op was not replayed from the memo"
    assert _loads(settled) == 1


def test_a_miss_once_loaded_runs_the_pipeline_file_once_and_the_stage(settled, pivot):
    """`K` is read when the pipeline loads: the command line is the same, the definition
    digest is not, and the full command goes on with the pipelines loaded."""
    out = pivot("run", K="2").stdout
    assert "ran" in out
    assert executions(settled) == ["loaded", "make"]
    assert (settled / "out.txt").read_text() == "data2"


def test_an_error_loading_the_pipelines_in_a_replay_is_shown_once(settled, pivot):
    proc = pivot("run", rc=1, K="boom")
    assert proc.stderr.count("Error: Cannot load pipeline") == 1
    assert "K is boom" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _loads(settled) == 1


GEN = """
import pathlib
from typing import Annotated
import pivot
pipeline = pivot.Pipeline("gen")
def gen() -> Annotated[pathlib.Path, pivot.Out("../data/x.txt", pivot.loaders.PathOnly())]:
    out = pathlib.Path("../data/x.txt")
    out.parent.mkdir(exist_ok=True)
    out.write_text("x")
    return out
pipeline.register(gen)
"""
USE = """
import pathlib
from typing import Annotated
import pivot
pipeline = pivot.Pipeline("use")
def use(
    x: Annotated[str, pivot.Dep("../data/x.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("y.txt", pivot.loaders.Text())]:
    return x + "y"
pipeline.register(use)
"""


def test_a_warning_while_loading_is_shown_once_and_the_no_op_replayed(project, pivot):
    """The producer of `use`'s dep is found through the scan of every pipeline file, which
    meets one that does not load: skipped with a warning on every run, that is still a
    no-op."""
    broken = "raise RuntimeError('broken on purpose')\n"
    write_files(
        project, {"gen/pipeline.py": GEN, "use/pipeline.py": USE, "broken/pipeline.py": broken}
    )
    warning = "Warning: Skipping the pipeline broken/pipeline.py"
    assert warning in pivot("run", cwd="use").stderr
    pivot("run", cwd="use")
    before = verdict_memo_key(project)
    assert before is not None
    proc = pivot("run", cwd="use")
    assert verdict_memo_key(project) == before
    assert "Every stage is up to date (2 stages" in proc.stdout
    assert proc.stderr.count(warning) == 1


def test_another_command_line_is_not_replayed(settled, pivot):
    """The entry is of `pivot run`: `pivot run --all` is checked in full (and then also
    found up to date); a changed input is then run by either."""
    out = pivot("run", "--all").stdout
    assert "Every stage is up to date" in out
    (settled / "in.txt").write_text("new")
    assert "ran" in pivot("run").stdout
    assert (settled / "out.txt").read_text() == "new1"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_replay_to_a_full_disk_says_so_as_the_full_command(settled):
    """stdout on a full device: the replay fails to print, and says so as the full
    command does (one paragraph, exit 1), not with a traceback."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "pivot", "run"],
            cwd=settled,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            check=False,
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("Error: No space left on device")


def _closed_stdout(project: pathlib.Path) -> subprocess.CompletedProcess:
    """`pivot run` started with its stdout closed."""
    return subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "pivot", "run"],
        cwd=project,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        check=False,
    )


def test_a_replay_with_stdout_closed_fails_as_the_full_command(settled):
    replayed = _closed_stdout(settled)
    (settled / MEMO_FILE).unlink()
    full = _closed_stdout(settled)
    assert "Traceback" not in replayed.stderr
    assert (replayed.returncode, replayed.stderr) == (full.returncode, full.stderr)


FOLDER = """
import pathlib
from typing import Annotated
import pivot
pipeline = pivot.Pipeline("d")
def make() -> Annotated[pathlib.Path, pivot.Out("outdir/", pivot.loaders.PathOnly())]:
    out = pathlib.Path("outdir")
    out.mkdir(exist_ok=True)
    (out / "a.txt").write_text("a")
    return out
pipeline.register(make)
"""


def test_a_warning_while_checking_the_memo_is_shown_as_the_full_command_shows_it(project, pivot):
    """A damaged state db is rebuilt (with a warning) when the replay hashes the folder
    output again: the warning is shown once, as a warning, and the run is still a no-op."""
    write_files(project, {"pipeline.py": FOLDER})
    pivot("run")
    pivot("run")
    before = verdict_memo_key(project)
    assert before is not None
    state = project / ".pivot" / "state.db"
    with open(state, "r+b") as db:  # in place: the folder .pivot/ keeps its stat key
        db.write(b"x" * 100)
    proc = pivot("run")
    assert "Every stage is up to date (1 stage" in proc.stdout
    assert proc.stderr.count("Warning: The state database") == 1, proc.stderr
    assert proc.stderr.count("The state database") == 1, proc.stderr


def test_a_target_that_is_not_text_is_run_and_not_replayed(settled, pivot):
    """A target from undecodable bytes (`\\udcff/..` leaves it an output path) cannot be
    kept in the memo's replay entry: the no-op is still a no-op, with no entry."""
    target = "\udcff/../out.txt"
    for _ in range(2):
        assert "Every stage is up to date (1 stage" in pivot("run", target).stdout
    memo = verdict_memo.load(settled / ".pivot" / "tmp")
    assert memo is None or memo.replay is None


def test_a_warning_while_loading_is_shown_once_with_a_handler_of_the_users(project, pivot):
    """A pipeline that configures logging at import (a handler on the root logger): the
    warning the replay keeps for the full command does not also reach that handler."""
    broken = "raise RuntimeError('broken on purpose')\n"
    configured = "import logging\nlogging.basicConfig()\n" + USE
    write_files(
        project,
        {"gen/pipeline.py": GEN, "use/pipeline.py": configured, "broken/pipeline.py": broken},
    )
    warning = "Skipping the pipeline broken/pipeline.py"
    for _ in range(3):
        proc = pivot("run", cwd="use")
        assert proc.stderr.count(warning) == 1, proc.stderr
        assert "Warning: " + warning in proc.stderr
    assert verdict_memo_key(project) is not None
