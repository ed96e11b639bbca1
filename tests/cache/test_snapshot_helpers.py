"""Large folders stat-ed in parts by helper processes (`cache.snapshot`): the listing is the
one a single process makes, a change in a helper's part is seen, a link to nothing is
still named, and a helper that cannot start or fails costs only speed."""

from __future__ import annotations

import os
import pathlib
import sys
import time

import pytest

from pivot.cache.hashing import Hasher, PathHash
from pivot.cache.snapshot import SnapshotHasher, scan
from pivot.cache.state import StateDB
from pivot.errors import DefinitionError

HELPER_MIN = 10  # a folder of 20 entries or more is stat-ed in parts (on 2 cores or more)
MARGIN_NS = 50_000_000
SETTLE = 0.1


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for k in range(60):
        (out / f"f{k:03d}.txt").write_text(f"file {k:03d}")
    for k in range(25):
        (out / "sub" / f"g{k:03d}.txt").write_text(f"sub file {k:03d}")
    (out / "link.txt").symlink_to("f000.txt")
    (out / "folder-link").symlink_to("sub")  # a link to a folder is not followed
    time.sleep(SETTLE)
    return tmp_path


class _NoCache:
    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        return None

    def record(self, rel: str, st: os.stat_result, digest: str) -> None:
        pass


def _truth(root: pathlib.Path) -> PathHash | None:
    """The tree hash from the files alone: no stat cache, no snapshot, no helper."""
    return Hasher(root, _NoCache()).hash_path("out")


def _hash(root: pathlib.Path) -> tuple[PathHash | None, bool]:
    """The tree hash through a snapshot hasher whose folders of HELPER_MIN entries are
    split, and whether the stat cache was consulted (False: settled by the snapshot)."""
    state = StateDB(root / "state.db")
    try:
        found = SnapshotHasher(root, state, racy_ns=MARGIN_NS, helper_min=HELPER_MIN).hash_path(
            "out"
        )
        return found, state._stats is not None
    finally:
        state.close()


def test_listing_in_parts_is_the_listing_of_one_process(root):
    top = str(root / "out")
    assert scan(top, "out", helper_min=HELPER_MIN) == scan(top, "out", helper_min=0)
    (root / "out" / os.fsdecode(b"caf\xe9.txt")).write_text("a name that is not UTF-8")
    assert scan(top, "out", helper_min=HELPER_MIN) == scan(top, "out", helper_min=0)
    (root / "out" / os.fsdecode(b"caf\xe9.txt")).unlink()
    first, _ = _hash(root)
    assert first == _truth(root)
    again, consulted = _hash(root)
    assert again == first and not consulted


def test_rewrite_in_a_helpers_part_is_seen(root):
    before, _ = _hash(root)
    last = root / "out" / os.listdir(root / "out")[-1]  # stat-ed by the last helper
    if not last.is_file() or last.is_symlink():
        last = root / "out" / "f059.txt"
    st = last.stat()
    with open(last, "r+b") as handle:  # same size, same inode, mtime put back
        handle.write(b"X" * st.st_size)
    os.utime(last, ns=(st.st_atime_ns, st.st_mtime_ns))
    after, consulted = _hash(root)
    assert consulted and after == _truth(root) != before


def test_link_to_nothing_in_a_split_folder_is_named(root):
    (root / "out" / "dangling.txt").symlink_to("nowhere.txt")
    with pytest.raises(DefinitionError, match=r"dangling\.txt"):
        _hash(root)


@pytest.mark.parametrize("interpreter", ["/nonexistent/python", "/bin/false", "/bin/true"])
def test_helper_that_cannot_start_or_fails_costs_only_speed(root, monkeypatch, interpreter):
    """No interpreter, one that exits with an error, one that writes nothing: this process
    stats the helpers' parts itself and the hash is the true one."""
    monkeypatch.setattr(sys, "executable", interpreter)
    top = str(root / "out")
    assert scan(top, "out", helper_min=HELPER_MIN) == scan(top, "out", helper_min=0)
    found, _ = _hash(root)
    assert found == _truth(root)
