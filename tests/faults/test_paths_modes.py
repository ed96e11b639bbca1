"""File modes from a tree manifest: only 0644 and 0755 ever reach the workspace.

A manifest records each file's mode; a crafted one may ask for setuid, setgid, sticky or
world-writable files. Whatever it says, a file is checked out 0755 if its owner-execute
bit is set, else 0644.
"""

from __future__ import annotations

import shutil
import stat

import pytest
from paths_support import cache_tree, write_lock
from support import write_files

CRAFTED = {
    "suid": (b"#!/bin/sh\nid\n", 0o6777),
    "sticky": (b"sticky\n", 0o1666),
    "owner-not-x": (b"group may execute, owner may not\n", 0o4654),
    "plain": (b"plain\n", 0o644),
}

PIPELINE = """
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[pathlib.Path, pivot.Out("data", pivot.loaders.PathOnly())]:
    raise RuntimeError("restored, never run")

pipeline.register(s)
"""


def modes(folder) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in folder.iterdir()}


def test_pull_produces_only_0644_and_0755(project, pivot, tmp_path):
    out = cache_tree(project, CRAFTED)
    pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    write_files(project, {"pipeline.py": PIPELINE})
    write_lock(project, "p/s", {"data": out})
    pivot("push", "--all")
    shutil.rmtree(project / ".pivot" / "cache")
    pivot("pull", "--all")
    assert modes(project / "data") == {
        "suid": 0o755,
        "sticky": 0o644,
        "owner-not-x": 0o644,
        "plain": 0o644,
    }


@pytest.mark.parametrize("link", ["copy", "hardlink", "symlink"])
def test_checkout_produces_no_special_bits_in_any_link_mode(project, pivot, link):
    write_files(project, {"pipeline.py": PIPELINE})
    write_lock(project, "p/s", {"data": cache_tree(project, CRAFTED)})
    pivot("checkout", "--link", link)
    for path in (project / "data").iterdir():
        target = path.resolve()  # a symlink checkout points into the cache
        mode = stat.S_IMODE(target.stat().st_mode)
        assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH | stat.S_IWGRP)
        if link == "copy":
            assert mode == {"suid": 0o755}.get(path.name, 0o644), path
