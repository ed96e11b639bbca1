"""The local executor's worker itself failing (an error in Pivot, not in a stage), and
outcomes too big for one read of the worker's pipe."""

from __future__ import annotations

from support import write_files

# The pipeline file is imported before the workers are forked, so it can make the worker's
# stage hand-over (`pivot.run.local.execute`, which `serve` calls) raise as a bug would.
BROKEN_WORKER = """
from typing import Annotated

import pivot
import pivot.run.local

def _broken(stage_id, *paths):
    raise RuntimeError(f"injected worker error for {stage_id}")

pivot.run.local.execute = _broken

pipeline = pivot.Pipeline("w")

def first() -> Annotated[str, pivot.Out("first.txt", pivot.loaders.Text())]:
    return "first"

def second(
    text: Annotated[str, pivot.Dep("first.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("second.txt", pivot.loaders.Text())]:
    return text + " second"

pipeline.register(first)
pipeline.register(second)
"""


def test_an_error_in_the_worker_fails_its_stage_with_the_traceback(project, pivot) -> None:
    write_files(project, {"pipeline.py": BROKEN_WORKER})
    result = pivot("run", "-j", "1", rc=1)
    assert "Stage w/first" in result.stderr
    assert "the worker process running it failed" in result.stderr
    assert "RuntimeError: injected worker error for w/first" in result.stderr
    assert "worker process running it died" not in result.stderr
    # The run stopped there: nothing ran after it, nothing was recorded.
    assert not (project / "first.txt").exists() and not (project / "second.txt").exists()
    assert not list((project / ".pivot" / "stages").glob("**/*.lock"))


MANY_FILES = """
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("m")

def many() -> Annotated[pathlib.Path, pivot.Out("many/", pivot.loaders.PathOnly())]:
    folder = pathlib.Path("many")
    folder.mkdir()
    for i in range(3000):
        (folder / f"a-file-with-a-long-name-{i:05}.txt").write_text(str(i))
    return folder

pipeline.register(many)
"""


def test_an_outcome_larger_than_a_pipe_read_arrives_whole(project, pivot) -> None:
    # 3,000 stat-cache rows in the outcome: several reads of the worker's pipe.
    write_files(project, {"pipeline.py": MANY_FILES})
    result = pivot("run", "-j", "1")
    assert "1 ran" in result.stdout
    assert len(list((project / "many").iterdir())) == 3000
    again = pivot("run")
    assert "Every stage is up to date" in again.stdout
