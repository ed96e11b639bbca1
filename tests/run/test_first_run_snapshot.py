"""A run leaves the snapshot of each directory output it stored (`snapshot.of_stored`,
judged by a racy marker made after the stage returned: `_racy.made_after_writes`), so the
first no-op after it is settled by the snapshot; a rewrite in place right after the run, a
file changed at or after the marker and a run killed while it writes the snapshot never
lead to a wrong "up to date"."""

from __future__ import annotations

import json
import os
import sqlite3

from support import (
    executions,
    kill_when,
    rewrite_keeping_mtime,
    start_pivot_group,
    write_files,
)
from test_dir_output_rewrite import PIPELINE
from test_dir_output_snapshot import stored_snapshot

from pivot import _racy
from pivot.cache import snapshot
from pivot.cache.hashing import DIR, Hasher, PathHash

# Many files in three folders, one of them set (by the stage) to a time after the marker.
MANY = """
import os
import pathlib
import time
from typing import Annotated

import pivot
from pivot.define.loaders import PathOnly

pipeline = pivot.Pipeline("p")

def make() -> Annotated[pathlib.Path, pivot.Out("data", PathOnly())]:
    with open("executions.log", "a") as log:
        log.write("make\\n")
    for k in range(FILES):
        pathlib.Path("data", f"d{k % 3}").mkdir(parents=True, exist_ok=True)
        pathlib.Path("data", f"d{k % 3}", f"f{k}.txt").write_text(f"file {k}\\n")
    if FUTURE:
        later = time.time_ns() + 3600 * 10**9  # at or after any marker made now
        os.utime(pathlib.Path("data", "d0", "f0.txt"), ns=(later, later))
    return pathlib.Path("data")

pipeline.register(make)
"""


class _NoRows:
    """A stat cache that knows nothing: every file is read."""

    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        return None

    def record(self, rel: str, st: os.stat_result, digest: str, settled: bool = True) -> None:
        pass


def _many(files: int, future: bool = False) -> str:
    return MANY.replace("FILES", str(files)).replace("FUTURE", str(future))


def _recorded_hash(project) -> str:
    lock = json.loads((project / ".pivot" / "stages" / "p" / "make.lock").read_text())
    return lock["outs"]["data"]["hash"]


def _settles_now(project, snap: snapshot.Snapshot) -> PathHash | None:
    """What the next command's check of `data` gets from `snap`."""
    paths, rows = snapshot.scan(str(project / "data"), "data")
    return snapshot.settles(snapshot.encode(snap), snapshot.listing(paths, rows))


def test_the_first_no_op_after_a_run_is_settled_by_the_snapshot_the_run_left(
    project, pivot
) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    snap = stored_snapshot(project)  # left by the run itself, no command in between
    assert snap is not None
    recorded = _recorded_hash(project)
    assert snap.hash == recorded
    assert _settles_now(project, snap) == PathHash(recorded, snap.size, DIR)
    # The stat cache's rows of the output's files made wrong: only a check settled by
    # the snapshot (which reads no row) still finds the output up to date.
    with sqlite3.connect(project / ".pivot" / "state.db") as conn:
        changed = conn.execute(
            "UPDATE stat_cache_v2 SET hash = ? WHERE path LIKE 'data/%'", ("0" * 64,)
        ).rowcount
    assert changed == 3
    assert "up to date" in pivot("run").stdout
    assert executions(project) == ["make"]


def test_a_rewrite_in_place_right_after_the_run_is_seen(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    assert stored_snapshot(project) is not None
    target = project / "data" / "a" / "deep" / "f.txt"
    rewrite_keeping_mtime(target, "FILE IN A/DEEP\n")  # same size, mtime put back
    proc = pivot("run", rc=1)
    assert "data/a/deep/f.txt. Nothing was replaced." in proc.stderr
    assert target.read_text() == "FILE IN A/DEEP\n"
    pivot("checkout", "--force")
    assert "up to date" in pivot("run").stdout
    assert executions(project) == ["make"]


def test_a_file_changed_at_or_after_the_marker_leaves_no_snapshot(project, pivot) -> None:
    write_files(project, {"pipeline.py": _many(30, future=True)})
    pivot("run")
    assert stored_snapshot(project) is None  # d0/f0.txt's mtime is not before the marker
    assert "up to date" in pivot("run").stdout  # checked in full
    assert executions(project) == ["make"]


def test_a_file_of_the_marker_s_own_time_is_not_settled(tmp_path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(3):
        (folder / f"f{k}.txt").write_text(f"file {k}\n")
    inner = os.listdir(folder)  # the order of the folder's listing, as `scan` finds it
    stats: list[os.stat_result | None] = [os.stat(folder / name) for name in inner]
    newest = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in stats if st is not None)
    device = os.stat(folder).st_dev
    found = PathHash("ab" * 32, 21, DIR)
    top = str(folder)
    # A marker whose time is that of the newest file (written in the marker's tick).
    assert snapshot.of_stored((device, newest), top, inner, stats, False, found) is None
    kept = snapshot.of_stored((device, newest + 1), top, inner, stats, False, found)
    assert kept is not None
    assert kept.paths == "\0".join(inner).encode()
    paths, rows = snapshot.scan(top, "data")
    assert paths == inner
    assert snapshot.settles(snapshot.encode(kept), snapshot.listing(paths, rows)) == found
    # Another order than the listing's never settles (the next check is then in full).
    turned = snapshot.of_stored((device, newest + 1), top, inner[::-1], stats[::-1], False, found)
    assert turned is not None
    assert snapshot.settles(snapshot.encode(turned), snapshot.listing(paths, rows)) is None
    assert snapshot.of_stored(None, top, inner, stats, False, found) is None  # no marker
    assert snapshot.of_stored((device + 1, newest + 1), top, inner, stats, False, found) is None
    assert snapshot.of_stored((device, newest + 1), top, inner, stats, True, found) is None
    changed = [*stats[:2], None]  # a file read while it changed
    assert snapshot.of_stored((device, newest + 1), top, inner, changed, False, found) is None


def test_the_marker_made_after_writes_is_later_than_every_file_written_before(tmp_path) -> None:
    for k in range(200):
        (tmp_path / f"f{k}").write_text("x")
    made = _racy.made_after_writes(str(tmp_path))
    assert made is not None
    for k in range(200):
        st = os.stat(tmp_path / f"f{k}")
        assert _racy.before(made, st) is True
    late = tmp_path / "late"
    late.write_text("x")
    assert _racy.before(made, os.stat(late)) is False


def test_a_run_killed_while_it_writes_the_snapshot_leaves_no_partial_one(project, pivot) -> None:
    write_files(project, {"pipeline.py": _many(5000)})
    wal = project / ".pivot" / "state.db-wal"

    def writing() -> bool:  # the first write to the state db: the snapshot's
        try:
            return wal.stat().st_size > 32
        except FileNotFoundError:
            return False

    proc = start_pivot_group(project, "run")
    assert kill_when(proc, writing)
    snap = stored_snapshot(project)
    if snap is not None:  # committed whole before the kill: it holds exactly the folder
        full = Hasher(project, _NoRows()).tree_hash("data")
        assert _settles_now(project, snap) == full
    pivot("run")  # no lock was written: the stage runs again
    assert executions(project) == ["make", "make"]
    assert stored_snapshot(project) is not None
    assert "up to date" in pivot("run").stdout
    rewrite_keeping_mtime(project / "data" / "d1" / "f1.txt", "FILE 1\n")
    assert "Nothing was replaced." in pivot("run", rc=1).stderr
