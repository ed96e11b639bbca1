"""Large folders stat-ed in parts by helper processes (`cache.snapshot`): the listing is the
one a single process makes, a change in a helper's part is seen, a link to nothing is
still named, a helper that cannot start or fails costs only speed, and a Ctrl-C leaves no
helper behind. And the in-place comparison of a stored snapshot with a listing, fuzzed like
the decoder."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import time
from array import array

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pivot.cache.hashing import Hasher, PathHash
from pivot.cache.snapshot import (
    FIELDS,
    ITEM,
    Listing,
    Snapshot,
    SnapshotHasher,
    decode,
    encode,
    scan,
    settles,
)
from pivot.cache.state import StateDB
from pivot.errors import DefinitionError
from tests.support import PYTHONPATH

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

    def record(self, rel: str, st: os.stat_result, digest: str, settled: bool = True) -> None:
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


# A process that stats a split folder with helpers that never finish (an interpreter that
# only sleeps), gets a real SIGINT while it waits for their rows, and then prints the pids
# of its child processes, running or unreaped.
_INTERRUPTED = textwrap.dedent(
    """
    import os, signal, sys, threading
    from pivot.cache.snapshot import scan
    top, sys.executable = sys.argv[1], sys.argv[2]
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        scan(top, "out", helper_min=10)
    except KeyboardInterrupt:
        me = str(os.getpid())
        children = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[1] == me:
                children.append(pid)
        print("interrupted; children:", *children)
    """
)


def test_ctrl_c_while_waiting_for_helpers_leaves_none_behind(root):
    """A Ctrl-C while the helpers' rows are awaited ends and reaps every helper at once
    (none is left running or as a zombie until the process exits)."""
    sleeper = root / "sleeping-python"
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")
    sleeper.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED, str(root / "out"), str(sleeper)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.stdout.split() == ["interrupted;", "children:"], done.stdout + done.stderr


# ----- comparing a stored snapshot in place ----------------------------------------------


def _listing(paths: bytes, stats: bytes) -> Listing:
    rows = array("q")
    rows.frombytes(stats[: len(stats) // ITEM * ITEM])
    return Listing(paths, rows, 0)


VALID_PATHS = b"a.txt\0sub/c.txt"
VALID_STATS = bytes(range(2 * FIELDS * ITEM))
VALID = encode(Snapshot("cd" * 32, 8, VALID_PATHS, VALID_STATS))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.binary(max_size=40), st.binary(max_size=120))
@example(VALID, VALID_PATHS, VALID_STATS)
@example(VALID, VALID_PATHS, VALID_STATS[:-ITEM])
@example(VALID, VALID_PATHS + b"\0", VALID_STATS)
def test_in_place_comparison_settles_only_an_intact_snapshot_of_that_listing(blob, paths, stats):
    """`settles` never crashes, and gives a hash only where the decoder reads an intact
    snapshot whose paths and stats are exactly the listing's."""
    current = _listing(paths, stats)
    found = settles(blob, current)
    decoded = decode(blob)
    if found is None:
        assert decoded is None or (decoded.paths, decoded.stats) != (
            current.paths,
            current.rows.tobytes(),
        )
    else:
        assert decoded is not None
        assert (decoded.paths, decoded.stats) == (current.paths, current.rows.tobytes())
        assert (found.hash, found.size) == (decoded.hash, decoded.size)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(1, 255))
def test_in_place_comparison_refuses_any_changed_byte(position, flip):
    damaged = bytearray(VALID)
    damaged[position] ^= flip
    assert settles(bytes(damaged), _listing(VALID_PATHS, VALID_STATS)) is None
