"""Folders stat-ed ahead of the plan (`cache.prestat`): the listing taken from a helper is
the one a single process makes; a check after the plan's window, of a folder replaced
since, or with a helper that failed lists the folder anew; helpers start only for
`pivot run` and only for plain relative folders the state db names."""

from __future__ import annotations

import os
import pathlib
import sys
import time

import pytest

from pivot.cache import prestat
from pivot.cache.snapshot import NAMESPACE, SnapshotHasher, _rows, scan
from pivot.cache.state import StateDB

MIN_FILES = 10  # a snapshot of this many files or more gets a helper here
SETTLE = 0.1


@pytest.fixture
def root(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A project whose `out` folder (files, a subfolder, links, a name that is not UTF-8)
    has a stored snapshot; the cwd is inside it."""
    root = tmp_path / "proj"
    out = root / "out"
    (out / "sub").mkdir(parents=True)
    (root / ".pivot").mkdir()
    for k in range(40):
        (out / f"f{k:03d}.txt").write_text(f"file {k:03d}")
    (out / "sub" / "g.txt").write_text("sub file")
    (out / "link.txt").symlink_to("f000.txt")
    (out / os.fsdecode(b"caf\xe9.txt")).write_text("a name that is not UTF-8")
    time.sleep(SETTLE)
    state = StateDB(root / ".pivot" / "state.db")
    try:
        SnapshotHasher(root, state, racy_ns=0).hash_path("out")
        assert state.get(NAMESPACE, "out") is not None
    finally:
        state.close()
    monkeypatch.setattr(prestat, "MIN_FILES", MIN_FILES)
    monkeypatch.setattr(prestat, "MIN_CORES", 1)  # helpers start on any machine
    monkeypatch.chdir(root / "out" / "sub")
    yield root
    prestat.close_window()


def _alone(top: str) -> tuple[list[str], object]:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = os.listdir(fd)
        return names, _rows(fd, names)
    finally:
        os.close(fd)


def _claim(top: str) -> tuple[list[str], object] | None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return prestat.claim(top, fd)
    finally:
        os.close(fd)


def test_the_helpers_listing_is_the_listing_of_one_process(root):
    top = str(root / "out")
    prestat.start(["pivot", "run"])
    assert _claim(top) == _alone(top)
    assert _claim(top) is None  # taken once
    prestat.start(["pivot", "run"])
    with_helper = scan(top, "out", helper_min=0)
    assert not prestat._ahead  # taken by the scan
    assert with_helper == scan(top, "out", helper_min=0)
    prestat.start(["pivot", "run"])
    time.sleep(0.5)  # the helper has stat-ed every entry: this process takes its rows
    assert _claim(top) == _alone(top)


def test_a_check_after_the_window_closed_lists_anew(root):
    """After the plan the command may write into the folder: what the helper stat-ed
    before is not used."""
    top = str(root / "out")
    before = scan(top, "out", helper_min=0)
    prestat.start(["pivot", "run"])
    time.sleep(0.5)
    target = root / "out" / "f039.txt"
    st = target.stat()
    target.write_text("FILE 039")  # same size, mtime put back: only the ctime tells
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    prestat.close_window()
    after = scan(top, "out", helper_min=0)
    assert after != before
    assert _claim(top) is None
    assert scan(top, "out", helper_min=0) == after


def test_a_folder_replaced_since_the_start_is_listed_anew(root):
    top = str(root / "out")
    prestat.start(["pivot", "run"])
    os.rename(top, f"{top}.old")
    os.mkdir(top)
    (root / "out" / "new.txt").write_text("new")
    assert _claim(top) is None
    prestat.start(["pivot", "run"])
    assert scan(top, "out", helper_min=0) == (["new.txt"], _alone(top)[1])


@pytest.mark.parametrize("interpreter", ["/nonexistent/python", "/bin/false", "/bin/true"])
def test_a_helper_that_cannot_start_or_fails_costs_only_speed(root, monkeypatch, interpreter):
    top = str(root / "out")
    monkeypatch.setattr(sys, "executable", interpreter)
    prestat.start(["pivot", "run"])
    assert _claim(top) is None
    expected = scan(top, "out", helper_min=0)
    prestat.start(["pivot", "run"])
    assert scan(top, "out", helper_min=0) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["pivot", "status"],
        ["pivot"],
        ["python", "run"],
        ["pivot", "--help", "run"],
        ["pivot", "run", "--help"],
        ["pivot", "run", "-h"],
    ],
)
def test_helpers_start_only_for_pivot_run(root, argv):
    prestat.start(argv)
    assert _claim(str(root / "out")) is None


@pytest.mark.parametrize("key", ["../outside", "/abs", "out/../out", ".pivot/x", "a//b", ""])
def test_only_plain_relative_folders_named_by_the_state_db_are_stat_ed(root, tmp_path, key):
    """A state db is untrusted: a key that is not a plain relative path gets no helper."""
    (tmp_path / "outside").mkdir()
    state = StateDB(root / ".pivot" / "state.db")
    try:
        state.put(NAMESPACE, key, state.get(NAMESPACE, "out"))
        state.put(NAMESPACE, "out", b"small")
        state.commit()
    finally:
        state.close()
    prestat.start(["pivot", "run"])
    assert not prestat._ahead


@pytest.mark.parametrize("name", ["../outside.txt", "sub/g.txt", ".", ".."])
def test_a_listing_naming_anything_but_an_entry_is_not_taken(root, monkeypatch, name):
    """What the helper hands over is untrusted: a name that is not one entry of the
    folder (a path through another folder, `.`, `..`) makes the folder listed anew."""
    (root / "outside.txt").write_text("not part of the output")
    top = str(root / "out")
    crafted = prestat._HELPER.replace(
        "names = os.listdir(fd)", f"names = os.listdir(fd); names[0] = {name!r}"
    )
    assert crafted != prestat._HELPER
    monkeypatch.setattr(prestat, "_HELPER", crafted)
    prestat.start(["pivot", "run"])
    assert _claim(top) is None
    prestat.start(["pivot", "run"])
    assert scan(top, "out", helper_min=0) == scan(top, "out", helper_min=0)
    assert "../outside.txt" not in scan(top, "out", helper_min=0)[0]
