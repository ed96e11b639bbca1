"""A folder swapped for a symbolic link after `Project.write_path` checked a path (a
deterministic hook right after the check), before Pivot removes a stage's old output or
reads a path to track: nothing is removed or read through the link."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
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

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def s() -> Annotated[str, pivot.Out("data/inner/x.txt", pivot.loaders.Text())]:
    return "fresh"


pipeline.register(s)
"""

# Runs stage p/s in this process the way a worker does (`local.execute_here`).
EXECUTE = """
import json, pathlib, sys
from pivot.cache.state import StateDB
from pivot.discover.finder import Discovery
from pivot.project import Project
from pivot.run import local

root = pathlib.Path(sys.argv[1])
project = Project(root)
stages = {st.id: st for p in Discovery(project, StateDB(project.state_path)).load_all()
          for st in p.stages.values()}
local.register_stages(stages)
exec(open(sys.argv[2]).read())
outcome = local.execute_here("p/s", root, str(project.cache_dir), str(project.tmp_dir))
print(json.dumps({"ok": outcome.ok, "error": outcome.error}))
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
    write_files(project, {"pipeline.py": PIPELINE, "data/inner/x.txt": "old\n"})
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    done = subprocess.run(
        [sys.executable, "-c", EXECUTE, str(project), str(hook)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "OUTSIDE": str(outside)},
        capture_output=True,
        text=True,
        check=True,
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
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
