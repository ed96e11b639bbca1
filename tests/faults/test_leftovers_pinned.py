"""The hidden `.NAME.pivot-tmp-*` siblings a killed checkout left are removed in the
folder Pivot checked, never through a symbolic link swapped in for it afterwards (a
deterministic hook right after the check): a file of that name outside survives."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from support import PYTHONPATH, add_blob, write_files

from pivot.cache.checkout import LinkMode
from pivot.cache.workspace import workspace_of
from pivot.errors import UnsafePath
from pivot.project import Project

LEFTOVER = ".x.txt.pivot-tmp-0123456789ab"

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def s() -> Annotated[str, pivot.Out("data/inner/x.txt", pivot.loaders.Text())]:
    return "fresh"


pipeline.register(s)
"""

# Swaps `data` for a link to `outside` right after the stage's old output was removed.
HOOK = """
import os
from pivot.project import Project

_remove = Project.remove_output

def remove_output(self, rel, what):
    _remove(self, rel, what)
    (self.root / "data").rename(self.root / "moved")
    os.symlink(os.environ["OUTSIDE"], self.root / "data")

Project.remove_output = remove_output
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
    """A folder outside the project, laid out like `data/`, holding a file named like a
    leftover of `data/inner/x.txt` (what a link would reach)."""
    folder = tmp_path / "outside"
    (folder / "inner").mkdir(parents=True)
    (folder / "inner" / LEFTOVER).write_text("victim\n")
    return folder


def test_checkout_removes_no_leftover_through_a_folder_swapped_after_the_check(
    project: pathlib.Path, outside: pathlib.Path, tmp_path: pathlib.Path, monkeypatch
):
    write_files(project, {f"data/inner/{LEFTOVER}": "left\n"})
    ws = workspace_of(Project(project))
    out = {"hash": add_blob(ws.cache, b"new\n"), "size": 4, "kind": "file"}
    checked = Project.write_path

    def swapping(self, rel, what, make_parents=False):
        dest = checked(self, rel, what, make_parents)
        (self.root / "data").rename(tmp_path / "moved")
        os.symlink(outside, self.root / "data")
        return dest

    monkeypatch.setattr(Project, "write_path", swapping)
    with pytest.raises(UnsafePath) as raised:
        ws.place_output("data/inner/x.txt", out, LinkMode.COPY, "the output")
    ws.state.close()
    assert "'data'" in str(raised.value)
    assert (outside / "inner" / LEFTOVER).read_text() == "victim\n"
    assert not (outside / "inner" / "x.txt").exists()


def test_checkout_still_removes_the_leftovers_of_the_folder_it_checked(project: pathlib.Path):
    write_files(
        project, {f"data/inner/{LEFTOVER}": "left\n", "data/inner/.y.pivot-old-0123456789ab/z": "z"}
    )
    ws = workspace_of(Project(project))
    out = {"hash": add_blob(ws.cache, b"new\n"), "size": 4, "kind": "file"}
    assert ws.place_output("data/inner/x.txt", out, LinkMode.COPY, "the output")
    assert ws.place_output("data/inner/y", out, LinkMode.COPY, "the output")
    ws.state.close()
    assert sorted(os.listdir(project / "data" / "inner")) == ["x.txt", "y"]
    assert (project / "data/inner/x.txt").read_text() == "new\n"


def test_a_stage_removes_no_leftover_through_a_folder_swapped_after_its_old_output_went(
    project: pathlib.Path, outside: pathlib.Path, tmp_path: pathlib.Path
):
    write_files(project, {"pipeline.py": PIPELINE, f"data/inner/{LEFTOVER}": "left\n"})
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
    assert (outside / "inner" / LEFTOVER).read_text() == "victim\n"
    assert not (outside / "inner" / "x.txt").exists()
    assert (project / "moved" / "inner" / LEFTOVER).read_text() == "left\n"
