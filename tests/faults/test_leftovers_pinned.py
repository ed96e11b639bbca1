"""The hidden `.NAME.pivot-tmp-*` siblings a killed checkout left are removed in the
folder Pivot checked, never through a symbolic link swapped in for it afterwards (a
deterministic hook right after the check): a file of that name outside survives."""

from __future__ import annotations

import os
import pathlib

import pytest
from paths_support import SWAP_PIPELINE, execute_with_hook
from support import add_blob, write_files

from pivot.cache.checkout import LinkMode
from pivot.cache.workspace import workspace_of
from pivot.errors import UnsafePath
from pivot.project import Project

LEFTOVER = ".x.txt.pivot-tmp-0123456789ab"


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
    write_files(project, {"pipeline.py": SWAP_PIPELINE, f"data/inner/{LEFTOVER}": "left\n"})
    outcome = execute_with_hook(project, HOOK, outside, tmp_path)
    assert not outcome["ok"]
    assert "'data'" in outcome["error"] and "data/inner/x.txt" in outcome["error"]
    assert (outside / "inner" / LEFTOVER).read_text() == "victim\n"
    assert not (outside / "inner" / "x.txt").exists()
    assert (project / "moved" / "inner" / LEFTOVER).read_text() == "left\n"
