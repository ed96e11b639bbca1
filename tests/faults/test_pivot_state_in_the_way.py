"""A file or folder standing where Pivot keeps its own state under `.pivot/` (a stage
writing there, or a user's file): a clear error naming it, exit 1, nothing recorded."""

from __future__ import annotations

import os
import pathlib

from tests.support import write_files

STAGE = """
import os
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    with open("ran.log", "a") as f:
        f.write("ran\\n")
    if {blocker!r}:
        pathlib.Path({blocker!r}).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path({blocker!r}).write_text("not Pivot's")
    return "a\\n"

pipeline.register(s)
"""


def _assert_named(proc, rel: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert rel in proc.stderr and "Move" in proc.stderr, proc.stderr
    assert "Internal error" not in proc.stderr and "Traceback" not in proc.stderr


def _leftovers(project: pathlib.Path) -> list[str]:
    """Temp files and lock files anywhere under `.pivot/stages`."""
    return sorted(p.name for p in (project / ".pivot" / "stages").rglob("*") if p.is_file())


def test_a_stage_writing_a_file_where_its_lock_folder_goes_is_told_clearly(project, pivot):
    write_files(project, {"pipeline.py": STAGE.format(blocker=".pivot/stages/p")})

    proc = pivot("run", rc=None)

    _assert_named(proc, ".pivot/stages/p")
    assert _leftovers(project) == ["p"]  # the stage's own file; no lock, no temp file
    assert not list((project / ".pivot").rglob("*.tmp"))
    # Moved away, the stage runs again and is recorded.
    (project / ".pivot" / "stages" / "p").unlink()
    write_files(project, {"pipeline.py": STAGE.format(blocker="")})
    pivot("run")
    assert (project / ".pivot" / "stages" / "p" / "s.lock").is_file()
    assert "up to date" in pivot("status").stdout


def test_a_file_where_a_lock_folder_goes_stops_run_and_status_before_any_stage(project, pivot):
    write_files(project, {"pipeline.py": STAGE.format(blocker="")})
    (project / ".pivot" / "stages" / "p").write_text("a user's file")

    for command in ("run", "status"):
        _assert_named(pivot(command, rc=None), ".pivot/stages/p")
    assert not (project / "ran.log").exists()
    assert (project / ".pivot" / "stages" / "p").read_text() == "a user's file"


def test_a_folder_where_a_lock_file_goes_is_told_clearly(project, pivot):
    write_files(project, {"pipeline.py": STAGE.format(blocker="")})
    (project / ".pivot" / "stages" / "p" / "s.lock").mkdir(parents=True)

    _assert_named(pivot("run", rc=None), ".pivot/stages/p/s.lock")
    assert not (project / "ran.log").exists()


RUNS_BLOCKER = """
import os
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    runs = pathlib.Path(".pivot/cache/runs")
    runs.mkdir(parents=True, exist_ok=True)
    for i in range(256):
        (runs / f"{i:02x}").write_text("not Pivot's")
    return "a\\n"

pipeline.register(s)
"""


def test_a_stage_writing_files_where_run_record_folders_go_is_told_clearly(project, pivot):
    write_files(project, {"pipeline.py": RUNS_BLOCKER})

    proc = pivot("run", rc=None)

    _assert_named(proc, ".pivot/cache/runs/")
    assert not (project / ".pivot" / "stages" / "p" / "s.lock").exists()
    assert not list((project / ".pivot").rglob("*.tmp"))


def test_files_where_run_record_folders_go_do_not_stop_the_plan(project, pivot):
    write_files(project, {"pipeline.py": STAGE.format(blocker="")})
    runs = project / ".pivot" / "cache" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for i in range(256):
        (runs / f"{i:02x}").write_text("a user's file")

    proc = pivot("run", rc=None)

    # The plan finds no record there (the stage runs); recording it names the file.
    _assert_named(proc, ".pivot/cache/runs/")
    assert (project / "ran.log").exists()
    assert not (project / ".pivot" / "stages" / "p" / "s.lock").exists()


def test_a_stage_making_a_folder_where_its_lock_file_goes_is_told_clearly(project, pivot):
    blocker = ".pivot/stages/p/s.lock/x"  # the stage writes x: s.lock becomes a folder
    write_files(project, {"pipeline.py": STAGE.format(blocker=blocker)})

    _assert_named(pivot("run", rc=None), ".pivot/stages/p/s.lock")
    assert not list((project / ".pivot").rglob("*.tmp"))
    # Moved away, the next run records the stage (restored from the record kept, or run).
    lock = project / ".pivot" / "stages" / "p" / "s.lock"
    (lock / "x").unlink()
    lock.rmdir()
    write_files(project, {"pipeline.py": STAGE.format(blocker="")})
    pivot("run")
    assert lock.is_file() and (project / "a.txt").read_text() == "a\n"
    assert "up to date" in pivot("status").stdout


def _fifo_in_place_of(path: pathlib.Path) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def test_a_fifo_in_place_of_a_memo_or_index_is_never_waited_on(project, pivot):
    """Pivot's own memos and the fingerprint's index cache are read only as regular files:
    a fifo in their place (nothing ever writes to it) is ignored, not waited on."""
    write_files(project, {"pipeline.py": STAGE.format(blocker="")})
    pivot("run")
    tmp = project / ".pivot" / "tmp"
    indexes = sorted((tmp / "fingerprint").glob("*.idx"))
    assert indexes
    for path in (tmp / "locks.msgpack", tmp / "swept.json", *indexes):
        _fifo_in_place_of(path)
    proc = pivot("run")  # PivotCLI's timeout fails the test if any read waits
    assert "up to date" in proc.stdout, proc.stdout
    (project / "a.txt").unlink()
    pivot("run")
    assert (project / "a.txt").read_text() == "a\n"


def test_a_fifo_in_place_of_a_lock_file_is_a_damaged_lock(project, pivot):
    """Read like any damaged lock file: a warning naming it, the stage not up to date,
    and the run records a regular lock file in its place (never waiting on the fifo)."""
    write_files(project, {"pipeline.py": STAGE.format(blocker="")})
    pivot("run")
    lock = project / ".pivot" / "stages" / "p" / "s.lock"
    _fifo_in_place_of(lock)
    for command in ("status", "run"):
        proc = pivot(command)
        assert ".pivot/stages/p/s.lock" in proc.stderr and "not a regular file" in proc.stderr
        assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr
    assert lock.is_file() and not lock.is_symlink()
    assert "up to date" in pivot("status").stdout
