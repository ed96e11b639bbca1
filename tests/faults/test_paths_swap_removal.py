"""A folder swapped for a symbolic link after `Project.write_path` checked a path (a
deterministic hook right after the check), before Pivot removes a stage's old output or
reads a path to track: nothing is removed or read through the link."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from paths_support import SWAP_PIPELINE, execute_with_hook
from support import PYTHONPATH, write_files

from pivot.cache.hashing import hash_bytes
from pivot.cache.objects import LocalCache
from pivot.errors import UnsafePath
from pivot.project import Project

# Swaps `data` for a link to `outside` right after the first check of a path under it.
HOOK = """
import os, pathlib
from pivot.project import Project

_check = Project.write_path
_swapped = []

def write_path(self, rel, what, make_parents=False):
    dest = _check(self, rel, what, make_parents)
    if rel.startswith("data/") and not _swapped:
        _swapped.append(rel)
        (self.root / "data").rename(self.root / "moved")
        os.symlink(os.environ["OUTSIDE"], self.root / "data")
    return dest

Project.write_path = write_path
"""


@pytest.fixture
def outside(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder outside the project, laid out like `data/` (what a link would reach)."""
    folder = tmp_path / "outside"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / "x.txt").write_text("victim\n")
    return folder


def test_a_stage_s_old_output_is_not_removed_through_a_swapped_link(
    project: pathlib.Path, outside: pathlib.Path, tmp_path: pathlib.Path
):
    write_files(project, {"pipeline.py": SWAP_PIPELINE, "data/inner/x.txt": "old\n"})
    outcome = execute_with_hook(project, HOOK, outside, tmp_path)
    assert not outcome["ok"]
    assert "'data'" in outcome["error"] and "data/inner/x.txt" in outcome["error"]
    assert (outside / "inner" / "x.txt").read_text() == "victim\n"  # not removed, not written
    assert (project / "moved" / "inner" / "x.txt").read_text() == "old\n"


def test_remove_output_refuses_a_folder_swapped_after_the_check(
    project: pathlib.Path, outside: pathlib.Path, tmp_path: pathlib.Path
):
    write_files(project, {"data/inner/x.txt": "old\n"})
    checked = Project(project)
    checked.write_path("data/inner/x.txt", "the output")
    (project / "data").rename(tmp_path / "moved")
    os.symlink(outside, project / "data")
    with pytest.raises(UnsafePath) as raised:
        checked.remove_output("data/inner/x.txt", "the output")
    assert "'data'" in str(raised.value)
    assert (outside / "inner" / "x.txt").read_text() == "victim\n"
    checked.remove_output("missing/folder/y.txt", "the output")  # nothing there: no error


def test_track_does_not_read_through_a_folder_swapped_after_the_check(
    project: pathlib.Path, outside: pathlib.Path, tmp_path: pathlib.Path
):
    write_files(project, {"data/inner/x.txt": "mine\n"})
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    script = (
        f"exec(open({str(hook)!r}).read())\n"
        "import pathlib, sys\n"
        "from pivot.errors import UnsafePath\n"
        "from pivot.services.track import track\n"
        "try:\n"
        f"    track(('data/inner/x.txt',), cwd=pathlib.Path({str(project)!r}))\n"
        "except UnsafePath as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "OUTSIDE": str(outside)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("refused:") and "'data'" in done.stdout
    cache = LocalCache(project / ".pivot" / "cache", project / ".pivot" / "tmp")
    assert not cache.has(hash_bytes(b"victim\n"))  # the outside file was never stored
    assert not (project / ".pivot" / "tracked" / "data").exists()
