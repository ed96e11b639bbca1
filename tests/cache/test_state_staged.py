"""Stat-cache rows staged while their files are still being written (`StateDB.staging`,
used by a streamed pull): they reach the database only through a `commit` after `keep`
(the files are in place), in its one transaction; dropped, or in a process killed before
that commit, they leave nothing behind that a later lookup could trust."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap

from pivot.cache.state import SMUDGED, StateDB, settle, stat_row

SETTLED = 1 << 62  # a `keep` limit every file here changed before


def stored_paths(path: pathlib.Path) -> list[str]:
    db = StateDB(path)
    try:
        return [r[0] for r in db.conn.execute("SELECT path FROM stat_cache_v2 ORDER BY path")]
    finally:
        db.close()


def rows_of(tmp_path: pathlib.Path, names: list[str]) -> list:
    rows = []
    for name in names:
        (tmp_path / name).write_text(name)
        rows.append(stat_row(name, os.stat(tmp_path / name), f"hash-{name}"))
    return rows


def test_kept_rows_are_committed_with_the_recorded_ones(tmp_path):
    db = StateDB(tmp_path / "state.db")
    rows = rows_of(tmp_path, ["b", "a", "c"])
    staged = db.staging()
    staged.add(rows[:2])
    staged.add(rows[2:])
    db.record("d", os.stat(tmp_path / "a"), "hash-d")
    db.keep(staged, rows, SETTLED)
    db.close()
    assert stored_paths(tmp_path / "state.db") == ["a", "b", "c", "d"]
    db = StateDB(tmp_path / "state.db")
    try:
        assert db.lookup("b", os.stat(tmp_path / "b")) == "hash-b"
    finally:
        db.close()


def test_staged_rows_not_kept_never_reach_the_database(tmp_path):
    db = StateDB(tmp_path / "state.db")
    rows = rows_of(tmp_path, ["a", "b"])
    dropped = db.staging()
    dropped.add(rows)
    dropped.drop()
    forgotten = db.staging()  # neither kept nor dropped
    forgotten.add(rows)
    db.record("c", os.stat(tmp_path / "a"), "hash-c")
    db.close()
    assert stored_paths(tmp_path / "state.db") == ["c"]
    db = StateDB(tmp_path / "state.db")
    try:
        assert db.lookup("a", os.stat(tmp_path / "a")) is None
    finally:
        db.close()


def test_a_process_killed_before_the_commit_leaves_no_staged_row(tmp_path):
    rows = rows_of(tmp_path, ["a", "b"])
    script = textwrap.dedent(
        f"""
        import os, sys
        from pivot.cache.state import StateDB
        db = StateDB(__import__("pathlib").Path({str(tmp_path / "state.db")!r}))
        db.put("ns", "k", b"v")
        staged = db.staging()
        staged.add({rows!r})
        db.keep(staged, {rows!r}, 1 << 62)
        print("staged", flush=True)
        sys.stdin.read()  # killed here
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"staged\n"
    proc.kill()
    proc.wait()
    assert stored_paths(tmp_path / "state.db") == []


def test_unicode_names_that_are_not_utf8_are_left_out(tmp_path):
    db = StateDB(tmp_path / "state.db")
    rows = rows_of(tmp_path, ["a"])
    odd = ("x\udcff", *rows[0][1:])
    staged = db.staging()
    staged.add([odd, *rows])
    db.keep(staged, [odd, *rows], SETTLED)
    db.close()
    assert stored_paths(tmp_path / "state.db") == ["a"]


def test_rows_staged_before_the_db_was_rebuilt_are_recorded_when_kept(tmp_path):
    db = StateDB(tmp_path / "state.db")
    rows = rows_of(tmp_path, ["a", "b"])
    staged = db.staging()
    staged.add(rows[:1])
    db.rebuild(sqlite3.DatabaseError("found damaged by another thread"))  # the table is gone
    staged.add(rows[1:])
    db.keep(staged, rows, SETTLED)
    db.close()
    assert stored_paths(tmp_path / "state.db") == ["a", "b"]


def test_kept_rows_of_files_changed_at_the_limit_or_later_are_smudged(tmp_path):
    """A row whose file changed at or after the racy marker's time is kept smudged: it
    never matches a stat, so the next command hashes the file again."""
    db = StateDB(tmp_path / "state.db")
    rows = rows_of(tmp_path, ["a", "b"])
    os.utime(tmp_path / "b", ns=(0, 0))  # an mtime long before; its ctime is now
    rows = [*rows[:1], stat_row("b", os.stat(tmp_path / "b"), "hash-b")]
    limit = rows[0][4]  # a's ctime: a is at the limit, b (changed after) beyond it
    staged = db.staging()
    staged.add(rows)
    db.keep(staged, rows, limit)
    db.close()
    db = StateDB(tmp_path / "state.db")
    try:
        stored = dict(db.conn.execute("SELECT path, size FROM stat_cache_v2"))
        assert stored == {"a": SMUDGED, "b": SMUDGED}
        assert db.lookup("a", os.stat(tmp_path / "a")) is None
        assert db.lookup("b", os.stat(tmp_path / "b")) is None
    finally:
        db.close()


def test_settle_smudges_a_row_whose_mtime_or_ctime_is_at_the_limit_or_later():
    h = "0" * 64
    rows = [("a", 1, 19, 7, 19, h), ("b", 1, 0, 7, 20, h), ("c", 1, 30, 7, 5, h)]
    assert settle(rows, 20) == [rows[0], ("b", SMUDGED, 0, 7, 20, h), ("c", SMUDGED, 30, 7, 5, h)]


def test_a_smudged_row_is_recorded_but_never_matched(tmp_path):
    db = StateDB(tmp_path / "state.db")
    (tmp_path / "a").write_text("a")
    st = os.stat(tmp_path / "a")
    db.record("a", st, "hash-a", settled=False)
    assert db.recorded("a")
    assert db.lookup("a", st) is None
    db.record("a", st, "hash-a")
    assert db.lookup("a", st) == "hash-a"
    db.close()
