"""A state db that may not be written (`.pivot/state.db` itself, or `.pivot/` where sqlite
makes its journal files): a command that changes the project (run, checkout, track, gc)
says so in one paragraph naming the file or folder and the fix before it changes
anything, exits 1, no traceback; a command that only looks (status, list, dag) works as
usual, its caches kept in memory, and leaves no file behind.

The refusals are real, for root too, as in test_state_not_writable.py: chmod with the
command run without the capabilities that override file permissions (EACCES), `chattr +i`
(EPERM), a read-only bind mount (EROFS)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from support import PYTHONPATH, word_pipeline, write_files
from test_state_not_writable import REASONS, pivot_as, refused


def pivot_ok(prefix: list[str], root: pathlib.Path, *args: str) -> str:
    """`pivot ARGS` started with `prefix`, expected to succeed cleanly: its output."""
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "pivot", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        timeout=120,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    return done.stdout


def _names(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _refusal(kind: str, target: str) -> str:
    """The start of the paragraph naming `target` refused by `kind`."""
    if target == ".pivot" or kind == "read-only mount":  # the file system: its folder
        return f"Cannot write in .pivot {REASONS[kind]}: "
    return f"Cannot open .pivot/state.db {REASONS[kind]}: "


@pytest.fixture
def changed(project, pivot) -> pathlib.Path:
    """A project that ran once, with its stage's code changed since."""
    write_files(project, {"pipeline.py": word_pipeline("one")})
    pivot("run")
    write_files(project, {"pipeline.py": word_pipeline("two")})
    return project


@pytest.mark.parametrize("target", ["state.db", ".pivot"])
@pytest.mark.parametrize("kind", list(REASONS))
def test_run_refuses_before_it_changes_anything_and_looking_works(changed, pivot, kind, target):
    project = changed
    lock = project / ".pivot/stages/p/make.lock"
    before = lock.read_bytes()
    files = _names(project / ".pivot")
    place = project / target if target == ".pivot" else project / ".pivot" / target
    with refused(kind, place) as prefix:
        if kind == "read-only mount" and target == ".pivot":
            failed = pivot_as(prefix, project, "run")  # the command lock in .pivot/tmp first
            assert "(read-only file system)" in failed.stderr, failed.stderr
        else:
            failed = pivot_as(prefix, project, "run")
            assert _refusal(kind, target) in failed.stderr, failed.stderr
        assert "and run the command again. Nothing half-written was kept." in failed.stderr
        assert "OperationalError" not in failed.stderr
        assert lock.read_bytes() == before and (project / "out.txt").read_text() == "one" * 100
        # Looking needs no writes: status, list and dag answer as usual.
        status = pivot_ok(prefix, project, "status")
        assert "p/make" in status and "code changed" in status, status
        assert "out.txt" in pivot_ok(prefix, project, "list", "--all")
        assert "p/make" in pivot_ok(prefix, project, "dag")
    assert _names(project / ".pivot") == files  # no journal file left beside the db
    assert "ran" in pivot("run").stdout  # fixed: it runs, and saves
    assert (project / "out.txt").read_text() == "two" * 100


def test_status_is_right_from_memory_when_the_state_db_is_read_only(changed, pivot):
    """Without its saved stat cache, status hashes again and is still right: up to date
    after the run, not after a same-size edit of the output."""
    project = changed
    pivot("run")
    with refused("chmod", project / ".pivot/state.db") as prefix:
        assert "up to date" in pivot_ok(prefix, project, "status")
        (project / "out.txt").write_text("owt" * 100)  # same size
        status = pivot_ok(prefix, project, "status")
        assert "up to date" not in status.splitlines()[0], status


def test_status_of_a_project_with_no_state_db_in_a_read_only_folder(project, pivot):
    write_files(project, {"pipeline.py": word_pipeline("one")})
    pivot("run")
    for name in _names(project / ".pivot"):
        if name.startswith("state.db"):
            (project / ".pivot" / name).unlink()
    with refused("chmod", project / ".pivot") as prefix:
        assert "up to date" in pivot_ok(prefix, project, "status")
    assert not (project / ".pivot/state.db").exists()


@pytest.mark.parametrize(
    "args", [("track", "data/raw.csv"), ("checkout", "out.txt"), ("gc",)], ids=lambda a: a[0]
)
def test_other_changing_commands_refuse(project, pivot, args):
    write_files(project, {"pipeline.py": word_pipeline("one"), "data/raw.csv": "a\n"})
    pivot("run")
    (project / "out.txt").unlink()
    with refused("chmod", project / ".pivot/state.db") as prefix:
        failed = pivot_as(prefix, project, *args)
    assert _refusal("chmod", "state.db") in failed.stderr, failed.stderr
    assert "chmod u+rw .pivot/state.db" in failed.stderr
    assert not (project / "data/raw.csv.pvt").exists() and not (project / "out.txt").exists()


def test_pull_refuses_and_push_works(project, pivot, tmp_path):
    """`pull` changes the project: refused before it places anything. `push` only reads
    it (it changes the remote): it pushes, its caches of the remote kept in memory."""
    write_files(project, {"pipeline.py": word_pipeline("one")})
    pivot("remote", "add", "origin", str(tmp_path / "store"), "--default")
    pivot("run")
    state = project / ".pivot/state.db"
    with refused("chmod", state) as prefix:
        assert "pushed" in pivot_ok(prefix, project, "push", "--all").lower()
    (project / "out.txt").unlink()
    subprocess.run(["rm", "-rf", str(project / ".pivot/cache/objects")], check=True)
    with refused("chmod", state) as prefix:
        failed = pivot_as(prefix, project, "pull")
    assert _refusal("chmod", "state.db") in failed.stderr, failed.stderr
    assert not (project / "out.txt").exists()
    pivot("pull")  # fixed: the push above stored everything
    assert (project / "out.txt").read_text() == "one" * 100
