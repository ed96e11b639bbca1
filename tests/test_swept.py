"""The stale-temp sweep's memo of clean folders (`pivot._swept`): a folder listed clean is
not listed again while it is unchanged, and a stale, damaged or crafted memo never hides a
temp file added since nor sends the sweep outside its folders."""

from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

from pivot._racy import MARKER
from pivot._swept import MEMO, temp_files
from pivot.project import Project

OLD_NS = 1_000_000_000_000_000_000  # 2001: far outside the racy window


@pytest.fixture
def tops(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    """Two state folders like `.pivot/stages` and `.pivot/cache/runs`, with shard folders
    holding finished files, every folder's mtime in the past."""
    stages, runs = tmp_path / "stages", tmp_path / "runs"
    for folder in (stages / "p0", runs / "ab", runs / "cd"):
        folder.mkdir(parents=True)
        (folder / "done.lock").write_text("{}")
    for folder in (stages / "p0", runs / "ab", runs / "cd", stages, runs):
        os.utime(folder, ns=(OLD_NS, OLD_NS))
    return [stages, runs]


def sweep(tops: list[pathlib.Path], memo_dir: pathlib.Path) -> list[str]:
    """The temps found, with no racy window (no marker, and a 0 s rule)."""
    return sorted(temp_files([str(t) for t in tops], str(memo_dir), racy_ns=0, marked=False))


def test_a_temp_added_after_the_folder_was_listed_clean_is_found(tops, tmp_path):
    assert sweep(tops, tmp_path) == []
    memo = json.loads((tmp_path / MEMO).read_text())
    assert len(memo["folders"]) == 5  # every folder remembered clean
    temp = tops[1] / "cd" / ".record.1234.tmp"
    temp.write_text("half")
    assert sweep(tops, tmp_path) == [str(temp)]
    # A folder below a remembered one, made since, is found and listed too.
    (tops[0] / "p0" / "nested").mkdir()
    nested = tops[0] / "p0" / "nested" / ".s.lock.99.tmp"
    nested.write_text("half")
    assert sweep(tops, tmp_path) == sorted([str(temp), str(nested)])


def test_a_folder_changed_within_the_racy_window_is_not_remembered(tops, tmp_path):
    os.utime(tops[1] / "ab")  # mtime now
    """(Every folder here had its ctime moved by the fixture's `utime` just now.)"""
    temp_files([str(t) for t in tops], str(tmp_path), marked=False)  # the 3 s rule
    assert not (tmp_path / MEMO).exists()  # nothing to remember: no memo written
    assert sweep(tops, tmp_path) == []  # with no racy window, every folder is remembered
    assert len(json.loads((tmp_path / MEMO).read_text())["folders"]) == 5


def test_a_folder_changed_before_the_racy_marker_is_remembered_at_once(tops, tmp_path):
    time.sleep(0.05)  # a tick of any coarse file-system clock after the fixture's changes
    assert temp_files([str(t) for t in tops], str(tmp_path)) == []
    assert (tmp_path / MARKER).is_file()
    assert len(json.loads((tmp_path / MEMO).read_text())["folders"]) == 5
    temp = tops[1] / "ab" / ".record.1234.tmp"
    temp.write_text("half")  # changes the folder after the marker: listed again
    assert temp_files([str(t) for t in tops], str(tmp_path)) == [str(temp)]


@pytest.mark.parametrize(
    "memo",
    [
        b"\x00garbage",
        b'{"format": 1, "folders": [["x", [1, 2], []]]}',
        b'{"format": 99, "folders": []}',
        b'{"format": 1, "folders": [[1, [1, 2, 3], []]]}',
    ],
)
def test_a_damaged_memo_lists_every_folder(tops, tmp_path, memo):
    temp = tops[0] / "p0" / ".s0.lock.77.tmp"
    temp.write_text("half")
    (tmp_path / MEMO).write_bytes(memo)
    assert sweep(tops, tmp_path) == [str(temp)]


def test_a_crafted_memo_never_leads_the_sweep_outside_its_folders(tops, tmp_path):
    """A memo claiming `..` (or a link) below a folder whose stat it matches is refused."""
    outside = tmp_path / ".outside.1.tmp"  # beside the tops: a temp name, never Pivot's
    outside.write_text("not Pivot's")
    runs = tops[1]
    st = os.lstat(runs)
    key = [st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    (tmp_path / MEMO).write_text(
        json.dumps({"format": 1, "folders": [[str(runs), key, ["ab", ".."]]]})
    )
    assert sweep(tops, tmp_path) == []
    # A link where a remembered folder's child was: not entered.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".x.2.tmp").write_text("not Pivot's")
    sweep(tops, tmp_path)
    os.symlink(elsewhere, runs / "ef")
    st = os.lstat(runs)
    key = [st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    (tmp_path / MEMO).write_text(json.dumps({"format": 1, "folders": [[str(runs), key, ["ef"]]]}))
    assert sweep(tops, tmp_path) == []
    assert outside.exists() and (elsewhere / ".x.2.tmp").exists()


def test_the_command_lock_removes_a_temp_in_a_remembered_folder(tmp_path: pathlib.Path):
    """Through `Project.exclusive`, as every writing command sweeps: a shard folder of the
    run records remembered clean by one command, then given a temp, loses it at the next."""
    (tmp_path / ".pivot").mkdir()
    project = Project(tmp_path)
    shard = project.cache_dir / "runs" / "ab"
    shard.mkdir(parents=True)
    (shard / "record").write_text("{}")
    for folder in (shard, shard.parent, project.cache_dir, project.stages_dir):
        folder.mkdir(exist_ok=True)
        os.utime(folder, ns=(OLD_NS, OLD_NS))
    with project.exclusive("run"):
        pass
    temp = shard / ".record.555.tmp"
    temp.write_text("half")
    with project.exclusive("run"):
        pass
    assert not temp.exists() and (shard / "record").exists()
