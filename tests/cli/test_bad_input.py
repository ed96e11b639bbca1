"""Every kind of bad input: a clear message naming the culprit, non-zero exit, nothing half-written."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

from support import COUNTER, PYTHONPATH, ROOT, executions, start_pivot, write_files

HEADER = (
    """
import pathlib
from typing import Annotated, TypedDict

import pivot
"""
    + COUNTER
)


def stage_files(project: pathlib.Path) -> list[str]:
    stages = project / ".pivot" / "stages"
    return sorted(p.relative_to(stages).as_posix() for p in stages.rglob("*") if p.is_file())


def assert_clean_error(proc, *needles: str) -> None:
    """Exit 1, no traceback, and the error is one paragraph: the last line of stderr, the
    only one starting with `Error: `."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and proc.stderr.endswith(errors[0] + "\n"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def test_no_project_says_pivot_init(tmp_path, pivot) -> None:
    proc = pivot("run", cwd=tmp_path, rc=1)
    assert proc.stderr == (
        f"Error: No Pivot project found: neither {tmp_path} nor any directory above it holds "
        f"a .pivot/ folder. Run `pivot init` at the top of your project first.\n"
    )


def test_syntax_error_names_file_and_line(project, pivot) -> None:
    write_files(project, {"pipeline.py": "import pivot\npipeline = pivot.Pipeline('p')\ndef f(:\n"})
    assert_clean_error(pivot("run", rc=1), "pipeline.py", "line 3", "syntax error")


def test_import_error_names_file_and_line(project, pivot) -> None:
    write_files(project, {"pipeline.py": "import pivot\n\nraise RuntimeError('boom')\n"})
    assert_clean_error(pivot("run", rc=1), "pipeline.py", "line 3", "RuntimeError: boom")


def test_verbose_shows_the_traceback(project, pivot) -> None:
    write_files(project, {"pipeline.py": "import pivot\n\nraise RuntimeError('boom')\n"})
    assert "Traceback" in pivot("--verbose", "run", rc=1).stderr


def test_parameter_without_dep_annotation(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def s(x: int) -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:
    return "x"

pipeline.register(s)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "'x'", "p/s", "pivot.Dep", "pipeline.py")


def test_out_outside_project_root(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("../escape.txt", pivot.loaders.Text())]:
    return "x"

pipeline.register(s)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "../escape.txt", "outside the project root", "p/s")
    assert not (project.parent / "escape.txt").exists()


def test_two_stages_writing_one_path(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def a() -> Annotated[str, pivot.Out("same.txt", pivot.loaders.Text())]:
    return "a"

def b() -> Annotated[str, pivot.Out("same.txt", pivot.loaders.Text())]:
    return "b"

pipeline.register(a)
pipeline.register(b)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "p/a", "p/b", "same.txt")


def test_cycle_names_its_stages(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def a(x: Annotated[str, pivot.Dep("b.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    return x

def b(x: Annotated[str, pivot.Dep("a.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("b.txt", pivot.loaders.Text())]:
    return x

pipeline.register(a)
pipeline.register(b)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "cycle", "p/a", "p/b")


FAILING = (
    HEADER
    + """
pipeline = pivot.Pipeline("p")

def bad() -> Annotated[str, pivot.Out("bad.txt", pivot.loaders.Text())]:
    _count("bad")
    raise ValueError("user bug here")

def after_bad(x: Annotated[str, pivot.Dep("bad.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("after.txt", pivot.loaders.Text())]:
    _count("after_bad")
    return x

def good() -> Annotated[str, pivot.Out("good.txt", pivot.loaders.Text())]:
    _count("good")
    return "fine"

pipeline.register(bad)
pipeline.register(after_bad)
pipeline.register(good)
"""
)


def test_stage_that_raises_shows_user_traceback(project, pivot) -> None:
    write_files(project, {"pipeline.py": FAILING})
    proc = pivot("run", "-j", "1", rc=1)
    assert "ValueError: user bug here" in proc.stderr
    assert 'raise ValueError("user bug here")' in proc.stderr
    assert str(ROOT / "pivot") not in proc.stderr  # no frame of Pivot's own
    assert "p/bad" in proc.stderr
    assert "p/bad.lock" not in stage_files(project)
    assert not (project / "bad.txt").exists()


def test_keep_going_runs_and_records_independent_stages(project, pivot) -> None:
    write_files(project, {"pipeline.py": FAILING})
    proc = pivot("run", "--keep-going", rc=1)
    assert "blocked" in proc.stdout and "p/after_bad" in proc.stdout
    assert sorted(executions(project)) == ["bad", "good"]
    assert stage_files(project) == ["p/good.lock"]
    assert (project / "good.txt").read_text() == "fine"


def test_stage_that_does_not_write_its_output(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

class Outs(TypedDict):
    report: Annotated[pathlib.Path, pivot.Out("report.txt", pivot.loaders.PathOnly())]

def lazy() -> Outs:
    return Outs(report=pathlib.Path("report.txt"))

pipeline.register(lazy)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "p/lazy", "report.txt", "did not write")
    assert stage_files(project) == []


def test_missing_dep_that_nothing_produces(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def s(x: Annotated[str, pivot.Dep("nowhere.csv", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:
    return x

pipeline.register(s)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "p/s", "nowhere.csv", "no stage produces")


VALID = (
    HEADER
    + """
pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:
    _count("s")
    return "ok"

pipeline.register(s)
"""
)


# The stage line (spaces collapsed) of a stage whose lock file is unusable but whose run is
# in the cache.
RESTORED_FROM_CACHE = (
    "restored p/s (never ran (no lock file); an earlier run with these inputs is in the "
    "local cache)"
)


def first_line(text: str) -> str:
    """The first line of `text` with its runs of spaces (column padding) collapsed."""
    return " ".join(text.splitlines()[0].split())


def test_corrupted_lock_is_stale_with_warning(project, pivot) -> None:
    write_files(project, {"pipeline.py": VALID})
    pivot("run")
    lock = project / ".pivot/stages/p/s.lock"
    lock.write_text("{ not json")
    proc = pivot("run")
    assert proc.stderr == (
        f"Warning: The lock file {lock} is unreadable (Expecting property name enclosed in "
        f"double quotes: line 1 column 3 (char 2)). Treating stage p/s as stale; it will run "
        f"again.\n"
    )
    assert first_line(proc.stdout) == RESTORED_FROM_CACHE, proc.stdout
    assert lock.read_text().startswith("{\n")
    assert first_line(pivot("run").stdout) == "skipped p/s"


def test_hand_edited_lock_with_escaping_path_is_rejected(project, pivot) -> None:
    write_files(project, {"pipeline.py": VALID})
    pivot("run")
    lock = project / ".pivot/stages/p/s.lock"
    lock.write_text(lock.read_text().replace('"o.txt"', '"../../etc/passwd"'))
    proc = pivot("run")
    assert proc.stderr == (
        f"Warning: Refusing the output path in the lock file {lock}: '../../etc/passwd' is "
        f"not a plain relative path inside the project (absolute paths, '..', '.', empty "
        f"parts, backslashes and NUL are never accepted from lock files, manifests, run "
        f"records or indexes). Treating stage p/s as stale; it will run again.\n"
    )
    assert first_line(proc.stdout) == RESTORED_FROM_CACHE, proc.stdout
    assert (project / "o.txt").read_text() == "ok"


def test_ctrl_c_leaves_nothing_half_written_and_next_run_recovers(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import time

pipeline = pivot.Pipeline("p")

class Outs(TypedDict):
    big: Annotated[pathlib.Path, pivot.Out("big.txt", pivot.loaders.PathOnly())]

def slow() -> Outs:
    out = pathlib.Path("big.txt")
    with out.open("w") as handle:
        handle.write("partial")
        handle.flush()
        pathlib.Path("started").write_text("1")
        time.sleep(60)
        handle.write(" done")
    return Outs(big=out)

pipeline.register(slow)
"""
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pivot", "run"],
        cwd=project,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"},
    )
    deadline = time.time() + 30
    while not (project / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    assert stage_files(project) == []
    assert not (project / "big.txt").exists()
    assert not list((project / ".pivot").rglob("*.tmp"))
    runs = project / ".pivot/cache/runs"
    assert not runs.exists() or not any(p.is_file() for p in runs.rglob("*"))
    source = (project / "pipeline.py").read_text().replace("time.sleep(60)", "pass")
    (project / "pipeline.py").write_text(source)
    pivot("run")
    assert (project / "big.txt").read_text() == "partial done"


def test_ctrl_c_that_reaches_only_the_stage_still_interrupts_the_run(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def first() -> Annotated[pathlib.Path, pivot.Out("a.txt", pivot.loaders.PathOnly())]:
    out = pathlib.Path("a.txt")
    out.write_text("half")
    raise KeyboardInterrupt  # as when the terminal's SIGINT lands in the stage first

def second(
    a: Annotated[pathlib.Path, pivot.Dep("a.txt", pivot.loaders.PathOnly())],
) -> Annotated[pathlib.Path, pivot.Out("b.txt", pivot.loaders.PathOnly())]:
    out = pathlib.Path("b.txt")
    out.write_text(a.read_text())
    return out

pipeline.register(first)
pipeline.register(second)
"""
        },
    )
    proc = pivot("run", rc=130)
    assert "Interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project / "a.txt").exists() and not (project / "b.txt").exists()
    assert stage_files(project) == []


def test_ctrl_c_before_a_stage_child_is_forked_still_interrupts_the_run(project, pivot) -> None:
    # Ctrl-C reaches the process group while a stage is being handed to its worker, before
    # the child that will run it exists: the worker (here signalled alone, by the stage
    # before) must not start the stage, as its child would never see that Ctrl-C.
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import os
import signal

pipeline = pivot.Pipeline("p")

def first() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    os.kill(os.getppid(), signal.SIGINT)
    return "a"

def second(
    a: Annotated[str, pivot.Dep("a.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("b.txt", pivot.loaders.Text())]:
    _count("second")
    return a

pipeline.register(first)
pipeline.register(second)
"""
        },
    )
    proc = pivot("run", "--jobs", "1", rc=130)
    assert "Interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert executions(project) == []
    assert not (project / "b.txt").exists()


def test_output_inside_pivot_dir_is_refused(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out(".pivot/cache/x", pivot.loaders.Text())]:
    return "x"

pipeline.register(s)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "p/s", ".pivot/cache/x", "inside .pivot/")


def test_dep_on_a_directory_holding_outputs(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def write() -> Annotated[str, pivot.Out("data/x.txt", pivot.loaders.Text())]:
    return "x"

def read(d: Annotated[pathlib.Path, pivot.Dep("data", pivot.loaders.PathOnly())]) -> Annotated[str, pivot.Out("y.txt", pivot.loaders.Text())]:
    return "y"

pipeline.register(write)
pipeline.register(read)
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "p/read", "data/x.txt", "p/write")


def test_worker_that_dies_is_a_failed_stage(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def dies() -> Annotated[str, pivot.Out("never.txt", pivot.loaders.Text())]:
    import os
    os._exit(3)

pipeline.register(dies)
"""
        },
    )
    proc = pivot("run", rc=1)
    assert "its process died (exit code 3)" in proc.stderr and "p/dies" in proc.stderr
    assert "Traceback" not in proc.stderr and stage_files(project) == []


def test_concurrent_runs_in_one_project_are_refused(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import time

pipeline = pivot.Pipeline("p")

def slow() -> Annotated[str, pivot.Out("slow.txt", pivot.loaders.Text())]:
    pathlib.Path("started").write_text("1")
    deadline = time.monotonic() + 60  # until the test releases it (bounded)
    while not pathlib.Path("release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"

pipeline.register(slow)
"""
        },
    )
    first = start_pivot(project, "run")
    deadline = time.time() + 30
    while not (project / "started").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = pivot("run", rc=1)
    (project / "release").write_text("1")
    assert second.stderr == (
        f"Error: `pivot run` (pid {first.pid}) is running in {project} right now; `pivot run` "
        f"would race with it. Wait for it to finish and try again.\n"
    )
    assert first.wait(timeout=60) == 0
    assert (project / "slow.txt").read_text() == "done"


def test_no_stage_starts_after_a_failure_without_keep_going(project, pivot) -> None:
    write_files(project, {"pipeline.py": FAILING})
    pivot("run", "-j", "1", rc=1)
    assert executions(project) == ["bad"]


def test_dep_edited_while_the_stage_runs_is_not_recorded(project, pivot) -> None:
    write_files(
        project,
        {
            "data.txt": "one",
            "pipeline.py": HEADER
            + """
import time

pipeline = pivot.Pipeline("p")

def count(text: Annotated[str, pivot.Dep("data.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("n.txt", pivot.loaders.Text())]:
    pathlib.Path("data.txt").write_text("one two three")  # someone edits it meanwhile
    return str(len(text.split()))

pipeline.register(count)
""",
        },
    )
    proc = pivot("run", rc=1)
    assert "data.txt changed while the stage ran" in proc.stderr
    assert stage_files(project) == [] and not (project / "n.txt").exists()
    # Nor is its output cached: the blob it staged is dropped, not left in .pivot/tmp.
    cached = project / ".pivot" / "cache" / "objects"
    assert not cached.exists() or [p for p in cached.rglob("*") if p.is_file()] == []
    assert list((project / ".pivot" / "tmp").glob("blob.*")) == []


def test_invalid_stage_names_are_refused(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:
    return "x"

pipeline.register(s, name="../../escaped")
"""
        },
    )
    assert_clean_error(pivot("run", rc=1), "Invalid stage name", "../../escaped")
    assert not list(project.rglob("escaped.lock"))
