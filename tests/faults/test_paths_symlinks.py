"""A symlinked folder never leads a checkout, a restore or a stage's output outside.

Pivot refuses to write or delete a tracked path whose parent folders include a symbolic
link, wherever the link points (inside the project too); the output itself may be a link,
which a checkout replaces without following.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from paths_support import assert_refused, cache_file, cache_tree, protected, snapshot, write_lock
from support import PYTHONPATH, declare_stage, write_files

PRECIOUS = b"someone else's file\n"

LINKED_OUT = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("link/o.txt", pivot.loaders.Text())]:
    return "stage output\\n"

pipeline.register(s)
"""


def outside_with_a_file(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(PRECIOUS)
    (outside / "o.txt").write_bytes(PRECIOUS)
    return outside


@pytest.mark.parametrize(
    ("link", "path"),
    [("evil", "evil/keep.txt"), ("evil", "evil/sub"), ("a/evil", "a/evil/deep/keep.txt")],
)
def test_pull_all_does_not_follow_a_committed_symlink(project, pivot, tmp_path, link, path):
    outside = outside_with_a_file(tmp_path)
    if path.endswith("sub"):
        out = cache_tree(project, {"keep.txt": (b"pwned\n", 0o644)})
    else:
        out = cache_file(project, b"pwned\n")
    pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    declare_stage(project, "p/s", ["innocent"])
    write_lock(project, "p/s", {"innocent": out})
    pivot("push", "--all")
    declare_stage(project, "p/s", [path, "fine.txt"])
    write_lock(project, "p/s", {path: out, "fine.txt": cache_file(project, b"fine\n")})
    shutil.rmtree(project / ".pivot" / "cache")
    (project / link).parent.mkdir(parents=True, exist_ok=True)
    (project / link).symlink_to(outside)
    before = snapshot(outside)
    assert_refused(pivot("pull", "--all", rc=None), repr(path), repr(link), "symbolic link")
    assert snapshot(outside) == before
    assert not (project / "fine.txt").exists()  # refused before anything was written


def test_a_symlink_to_a_folder_inside_the_project_is_refused_too(project, pivot, tmp_path):
    (project / "real").mkdir()
    (project / "link").symlink_to("real")
    write_files(project, {"pipeline.py": LINKED_OUT})
    write_lock(project, "p/s", {"link/o.txt": cache_file(project, b"x\n")})
    assert_refused(pivot("checkout", rc=None), "'link/o.txt'", "'link'", "symbolic link")
    assert list((project / "real").iterdir()) == []


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_checkout_does_not_follow_a_symlinked_folder(project, pivot, tmp_path, mode):
    outside = outside_with_a_file(tmp_path)
    (project / "link").symlink_to(outside)
    write_files(project, {"pipeline.py": LINKED_OUT})
    write_lock(project, "p/s", {"link/o.txt": cache_file(project, b"pwned\n")})
    before = snapshot(outside)
    proc = pivot("checkout", "--link", mode, rc=None)
    assert_refused(proc, "p/s", "'link/o.txt'", "symbolic link", str(outside))
    assert snapshot(outside) == before


def test_run_refuses_an_output_through_a_symlinked_folder(project, pivot, tmp_path):
    outside = outside_with_a_file(tmp_path)
    (project / "link").symlink_to(outside)
    write_files(project, {"pipeline.py": LINKED_OUT})
    before = snapshot(outside)
    proc = pivot("run", rc=None)
    assert proc.returncode == 1, proc.stderr
    for needle in ("p/s", "'link/o.txt'", "symbolic link", "cannot run"):
        assert needle in proc.stdout + proc.stderr, (needle, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(outside) == before  # neither written nor deleted


def test_restore_does_not_write_or_delete_through_a_folder_made_a_symlink(project, pivot, tmp_path):
    """The stage ran with `link/` a real folder; then `link` became a symlink (a commit
    replaced it). The restore is refused, and so is the run; nothing outside changes."""
    outside = outside_with_a_file(tmp_path)
    write_files(project, {"pipeline.py": LINKED_OUT})
    pivot("run")
    shutil.rmtree(project / "link")
    (project / "link").symlink_to(outside)
    before = snapshot(outside)
    proc = pivot("run", rc=None)
    assert proc.returncode == 1
    assert "Cannot restore p/s" in proc.stderr and "symbolic link" in proc.stderr, proc.stderr
    assert snapshot(outside) == before


def test_a_checkout_replaces_a_symlinked_output_without_following_it(project, pivot, tmp_path):
    """The output path itself may be a link: it is replaced, its target left alone."""
    outside = outside_with_a_file(tmp_path)
    write_files(project, {"pipeline.py": LINKED_OUT.replace("link/o.txt", "o.txt")})
    pivot("run")
    os.unlink(project / "o.txt")
    (project / "o.txt").symlink_to(outside / "o.txt")
    before = {**snapshot(outside), **protected(project)}
    pivot("checkout")
    assert not (project / "o.txt").is_symlink()
    assert (project / "o.txt").read_text() == "stage output\n"
    assert {**snapshot(outside), **protected(project)} == before


REPORT_CAUSE = """
from pivot.run.scheduler import RunOptions
from pivot.services import stages

reports = []
try:
    stages.run((), False, False, False, RunOptions(), None, False, False, reports.append)
except Exception as exc:
    print("raised", type(exc).__name__)
cause = next(r.cause for r in reports if r.status == "failed")
print(type(cause).__name__, cause.path)
"""


def test_a_refused_output_reaches_the_run_report_as_its_pivot_error(project, tmp_path):
    """The executor hands the refusal back with its class and data (not only its text),
    so the CLI can give that class's advice."""
    (project / "link").symlink_to(outside_with_a_file(tmp_path))
    write_files(project, {"pipeline.py": LINKED_OUT})
    proc = subprocess.run(
        [sys.executable, "-c", REPORT_CAUSE],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "UnsafePath link/o.txt", proc.stdout
