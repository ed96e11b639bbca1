"""Pivot's own state folders are never links: a crafted repository cannot point them at
another folder for `gc` to empty or for a command to write into.

`.pivot`, `.pivot/stages`, `.pivot/tmp` and, in the cache, `objects`, `runs`, `packs` and
`quarantine` must be real folders; every command refuses a link there, naming it. Only
`.pivot/cache` itself may be a link (to keep the cache on another disk).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest
from paths_support import git_init, snapshot
from support import write_files

DIGEST = "ab" * 32

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:
    return "stage output\\n" * 1000

pipeline.register(s)
"""


def victim_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """Someone's folder, holding names of every shape Pivot keeps in its state folders."""
    victim = tmp_path / "victim"
    for rel in ("precious.txt", "blob.precious", DIGEST, f"{DIGEST[:2]}/{DIGEST[2:]}"):
        (victim / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim / rel).write_text("someone else's file\n")
    (victim / "folder").mkdir()
    (victim / "folder" / "inner.txt").write_text("someone else's file\n")
    return victim


@pytest.mark.parametrize(
    "state", ["cache/quarantine", "cache/objects", "cache/runs", "cache/packs", "tmp", "stages"]
)
@pytest.mark.parametrize("command", [["gc"], ["status"]])
def test_a_committed_link_on_a_state_folder_is_refused(project, pivot, tmp_path, state, command):
    victim = victim_folder(tmp_path)
    write_files(project, {"pipeline.py": PIPELINE})
    git_init(project)
    link = project / ".pivot" / state
    if link.is_dir():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    before = snapshot(victim)
    proc = pivot(*command, rc=None)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert f"{link} is a symbolic link (to {victim})" in proc.stderr
    assert f"rm {link}" in proc.stderr
    assert snapshot(victim) == before


def test_pivot_itself_as_a_link_is_refused(project, pivot, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(project / ".pivot", elsewhere)
    (project / ".pivot").symlink_to(elsewhere)
    (elsewhere / "tmp").mkdir(exist_ok=True)
    (elsewhere / "tmp" / "blob.precious").write_text("someone else's file\n")
    before = snapshot(elsewhere)
    proc = pivot("gc", rc=1)
    assert f"{project / '.pivot'} is a symbolic link" in proc.stderr
    assert "pivot init" in proc.stderr
    assert snapshot(elsewhere) == before


def test_a_link_on_the_command_lock_is_refused(project, pivot, tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("someone else's file\n")
    (project / ".pivot" / "tmp").mkdir(exist_ok=True)
    (project / ".pivot" / "tmp" / "command.lock").symlink_to(precious)
    proc = pivot("gc", rc=1)
    assert "command.lock is a symbolic link" in proc.stderr
    assert precious.read_text() == "someone else's file\n"


def test_gc_never_follows_a_link_inside_its_folders(project, pivot, tmp_path):
    """Links a repository commits inside a real quarantine, shard or temp folder: gc
    removes the links, never what they point to."""
    victim = victim_folder(tmp_path)
    cache = project / ".pivot" / "cache"
    (cache / "quarantine").mkdir(parents=True)
    (cache / "quarantine" / DIGEST).symlink_to(victim)
    (cache / "runs").mkdir()
    (cache / "runs" / DIGEST[:2]).symlink_to(victim)
    (cache / "objects").mkdir()
    (cache / "objects" / DIGEST[:2]).symlink_to(victim)
    (project / ".pivot" / "tmp").mkdir(exist_ok=True)
    (project / ".pivot" / "tmp" / "blob.1.x").symlink_to(victim)
    before = snapshot(victim)
    pivot("gc")
    assert snapshot(victim) == before
    assert not os.path.lexists(cache / "quarantine" / DIGEST)
    assert not os.path.lexists(project / ".pivot" / "tmp" / "blob.1.x")


def other_disk() -> str | None:
    """A folder on another filesystem than the temp dir (tmpfs), if the machine has one."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        return None
    return shm


@pytest.mark.parametrize("disk", ["same", "other"])
def test_the_cache_itself_may_be_a_link(project, pivot, tmp_path, disk):
    if disk == "other" and other_disk() is None:
        pytest.skip("no second filesystem (/dev/shm) on this machine")
    base = tempfile.mkdtemp(dir=other_disk() if disk == "other" else tmp_path)
    try:
        write_files(project, {"pipeline.py": PIPELINE})
        target = pathlib.Path(base) / "cache"
        target.mkdir()
        (project / ".pivot" / "cache").symlink_to(target)
        pivot("run")
        assert any((target / "objects").iterdir())
        (project / "o.txt").unlink()
        pivot("checkout")
        assert (project / "o.txt").read_text() == "stage output\n" * 1000
        (target / "quarantine").mkdir()
        (target / "quarantine" / "notes.txt").write_text("not Pivot's\n")
        pivot("gc")
        assert (target / "quarantine" / "notes.txt").exists()  # only names Pivot gives
        pivot("run")  # up to date: the lock and the cache agree
        assert (project / ".pivot" / "cache").is_symlink()
    finally:
        shutil.rmtree(base)


def test_a_cache_link_to_nowhere_is_a_clear_error(project, pivot, tmp_path):
    (project / ".pivot" / "cache").symlink_to(tmp_path / "unmounted")
    proc = pivot("status", rc=1)
    assert "is a symbolic link to" in proc.stderr and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr
