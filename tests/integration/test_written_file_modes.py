"""The files Pivot writes by replacing them atomically (lock files, `.gitignore`s, the
committed config, a local-folder remote's packs and indexes) get the permission bits of
any new file under the user's umask, as git and DVC write theirs, so that a colleague
sharing the checkout or the remote folder can read them; `config.local.yaml`, which may
hold credentials, stays readable by its owner only."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest
from support import write_files

UMASK = 0o002  # group-writable: what a shared project or remote folder is set up with

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return "made"


pipeline.register(make)
"""


@pytest.fixture
def shared_umask():
    old = os.umask(UMASK)
    yield
    os.umask(old)


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask_and_the_local_config_stays_private(
    project, pivot, tmp_path, shared_umask
):
    write_files(project, {"pipeline.py": PIPELINE})
    store = tmp_path / "store"
    store.mkdir()
    pivot("remote", "add", "-d", "origin", str(store))
    pivot("remote", "modify", "--local", "origin", "jobs", "4")
    pivot("run")
    pivot("push")
    expected = 0o666 & ~UMASK
    written = [
        project / ".pivot" / "stages" / "p" / "make.lock",
        project / ".gitignore",
        project / ".pivot" / "config.yaml",
        *(p for p in store.rglob("*") if p.is_file()),
    ]
    assert len(written) > 4  # the remote holds a pack and an index at least
    assert {str(p): oct(_mode(p)) for p in written} == {str(p): oct(expected) for p in written}
    assert oct(_mode(project / ".pivot" / "config.local.yaml")) == oct(0o600)
