"""A directory output settled by its snapshot (`cache.snapshot`) through the real CLI: once
its files are older than the racy margin, no-op runs write and use the snapshot, and a
same-size rewrite that keeps the mtime, or an added file, is still noticed."""

from __future__ import annotations

import os
import time

from support import executions, write_files
from test_dir_output_rewrite import PIPELINE

from pivot.cache import snapshot
from pivot.cache.state import StateDB


def stored_snapshot(project) -> snapshot.Snapshot | None:
    """The directory snapshot stored for the output `data`, if any."""
    state = StateDB(project / ".pivot" / "state.db")
    try:
        return snapshot.load(state, "data")
    finally:
        state.close()


def test_a_snapshot_settles_no_op_runs_and_every_edit_is_still_noticed(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    time.sleep(snapshot.RACY_NS / 1e9 + 0.2)  # every output file older than the margin
    assert "up to date" in pivot("run").stdout
    assert stored_snapshot(project) is not None
    assert "up to date" in pivot("run").stdout  # settled by the snapshot

    target = project / "data" / "a" / "deep" / "f.txt"
    before = target.stat()
    with open(target, "r+") as handle:
        handle.write("FILE IN A/DEEP\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    proc = pivot("run", rc=1)
    assert "data/a/deep/f.txt. Nothing was replaced." in proc.stderr
    pivot("checkout", "--force")
    assert target.read_text() == "file in a/deep\n"

    (project / "data" / "b" / "new.txt").write_text("added\n")
    proc = pivot("run", rc=1)
    assert "data/b/new.txt" in proc.stderr
    assert (project / "data" / "b" / "new.txt").read_text() == "added\n"
    pivot("checkout", "--force")
    assert not (project / "data" / "b" / "new.txt").exists()
    assert "up to date" in pivot("run").stdout
    assert executions(project) == ["make"]
