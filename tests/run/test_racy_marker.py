"""The racy marker of lock file reads (`lockfile.use_marker`): real files in a temp folder.
A lock file changed before the marker was made is memoised at once (no 3 s wait), one
changed at or after it never is, also when its mtime is set back below the marker's; a
memo entry made under the marker is used by the next command; a marker that cannot be
made or lies on another device than the stages folder leaves the 3 s rule in force. End
to end: the no-op run right after a run writes the lock memo, and a lock file rewritten
in place after it still decides the run."""

from __future__ import annotations

import os
import pathlib
import time

import pytest
from support import TWO_STAGES, executions, rewrite_keeping_mtime, write_files

from pivot import _racy
from pivot.run import lock_memo, lock_prefetch, lockfile
from pivot.run.lockfile import Lock, read_lock, read_validated, write_lock

A, B, C, K1 = "a" * 64, "b" * 64, "c" * 64, "d" * 64
TICK = 0.05  # longer than any coarse file-system clock tick of Linux (1-10 ms)


def _lock(stage_id: str, out_hash: str = A) -> Lock:
    return Lock(
        stage_id=stage_id,
        run_key=K1,
        fingerprint={"func:s": "1" * 8},
        params={"limit": [1, 2]},
        deps={"raw.txt": B},
        outs={"out.txt": {"hash": out_hash, "size": 5, "kind": "file"}},
    )


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(lockfile, "_READ", {})
    monkeypatch.setattr(lockfile, "_FETCHED", {})
    monkeypatch.setattr(lockfile, "_MARKED", None)
    monkeypatch.setattr(lock_memo, "_LOADED", {})


@pytest.fixture
def folders(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """A project's stages and tmp folders, the stages folder holding one lock file changed
    a clock tick ago (well within the 3 s window)."""
    stages, tmp = tmp_path / ".pivot" / "stages", tmp_path / ".pivot" / "tmp"
    tmp.mkdir(parents=True)
    write_lock(stages, _lock("p/old"))
    time.sleep(TICK)
    return stages, tmp


def _name(stages: pathlib.Path, stage_id: str) -> str:
    return str(lockfile.lock_path(stages, stage_id))


def _made() -> tuple[int, int] | None:
    """The device and M of this command's marker, None before it is made."""
    assert lockfile._MARKED is not None
    return lockfile._MARKED[1]._made


def test_a_lock_changed_before_the_marker_is_memoised_at_once(folders):
    stages, tmp = folders
    assert read_validated(_name(stages, "p/old"))[0] is None  # no marker: the 3 s rule
    lockfile.use_marker(stages, tmp)
    key, _, lock = read_validated(_name(stages, "p/old"))
    assert lock == _lock("p/old")
    assert key == lockfile._stat_key(os.stat(_name(stages, "p/old")))
    marker = os.stat(tmp / _racy.MARKER)
    assert max(key[1], key[2]) < min(marker.st_mtime_ns, marker.st_ctime_ns)


def test_a_lock_rewritten_after_the_marker_with_the_same_size_and_mtime_is_seen(folders):
    stages, tmp = folders
    lockfile.use_marker(stages, tmp)
    assert read_lock(stages, "p/old") == _lock("p/old")  # the marker is made here
    made = _made()
    assert made is not None and made[1] > 0
    bound = made[1]
    path = lockfile.lock_path(stages, "p/old")
    # In place, same size, in the marker's tick or later.
    after = rewrite_keeping_mtime(path, _lock("p/old", out_hash=C).to_json())
    assert after.st_ctime_ns >= bound
    assert read_lock(stages, "p/old").outs["out.txt"]["hash"] == C
    # Changed at or after the marker: never memoised, even with its mtime set below M.
    os.utime(path, ns=(bound - 1, bound - 1))
    assert read_validated(str(path))[0] is None
    write_lock(stages, _lock("p/new"))
    assert read_validated(_name(stages, "p/new"))[0] is None
    assert str(path) in lockfile._READ  # only the first read, before the rewrite
    assert _name(stages, "p/new") not in lockfile._READ


def test_a_memo_entry_made_under_the_marker_is_used_by_the_next_command(folders):
    stages, tmp = folders
    lockfile.use_marker(stages, tmp)
    read_lock(stages, "p/old")
    lock_memo.store(stages, tmp)
    lockfile._READ.clear()  # the next command
    lock_memo._LOADED.clear()
    lockfile.use_marker(stages, tmp)
    assert lock_memo.load(stages, tmp) == 1
    marker = os.stat(tmp / _racy.MARKER)
    assert read_lock(stages, "p/old") == _lock("p/old")
    assert lockfile._FETCHED == {}  # handed over from the memo
    assert _made() is None  # and nothing read from disk: no marker made
    assert os.stat(tmp / _racy.MARKER).st_ctime_ns == marker.st_ctime_ns


def test_a_file_changed_after_the_marker_was_made_is_not_before_it(tmp_path):
    before = tmp_path / "before"
    before.write_text("x")
    time.sleep(TICK)
    made = _racy.Marker(str(tmp_path)).made()
    assert made is not None
    after = tmp_path / "after"
    after.write_text("x")
    assert _racy.before(made, os.stat(before)) is True
    assert _racy.before(made, os.stat(after)) is False
    os.utime(after, ns=(made[1] - 1, made[1] - 1))  # mtime set back: the ctime still tells
    assert _racy.before(made, os.stat(after)) is False
    os.utime(before)  # changed now: no longer before
    assert _racy.before(made, os.stat(before)) is False
    assert _racy.before(None, os.stat(before)) is None
    assert _racy.before((made[0] + 1, made[1]), os.stat(before)) is None  # another device


def test_a_marker_that_cannot_be_made_leaves_the_3_s_rule(folders, tmp_path):
    stages, _ = folders
    (tmp_path / "file").write_text("")
    links = tmp_path / "links"
    links.mkdir()
    (links / _racy.MARKER).symlink_to(tmp_path / "elsewhere")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / _racy.MARKER)
    folder = tmp_path / "folder"
    (folder / _racy.MARKER).mkdir(parents=True)
    for bad in (tmp_path / "absent", tmp_path / "file", links, fifo, folder):
        lockfile._READ.clear()
        lockfile.use_marker(stages, bad)
        assert read_lock(stages, "p/old") == _lock("p/old")
        assert _made() == (-1, -1)
        assert lockfile._READ == {}  # changed within 3 s: not memoised
    assert not (tmp_path / "elsewhere").exists()


def test_a_marker_hard_linked_elsewhere_is_refused_and_leaves_that_file_alone(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("data")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    os.link(outside, tmp / _racy.MARKER)
    before = outside.stat()
    assert _racy.Marker(str(tmp)).made() is None
    after = outside.stat()
    assert outside.read_text() == "data"
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)


def test_mounts_within_a_folder_are_found():
    assert _racy.mounted_within("/")
    assert _racy.mounted_within("/proc")
    assert not _racy.mounted_within(os.path.dirname(os.path.abspath(__file__)))


def test_a_marker_on_another_device_leaves_the_3_s_rule(folders, tmp_path):
    stages, _ = folders
    shm = pathlib.Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == stages.stat().st_dev:
        pytest.skip("no folder on another device")
    other = shm / f"pivot-test-{os.getpid()}-{time.time_ns()}"
    other.mkdir()
    try:
        lockfile.use_marker(stages, other)
        assert read_lock(stages, "p/old") == _lock("p/old")
        made = _made()
        assert made is not None and made[0] == shm.stat().st_dev
        assert lockfile._READ == {}  # changed within 3 s: not memoised
    finally:
        for entry in other.iterdir():
            entry.unlink()
        other.rmdir()


def test_the_helper_judges_against_its_own_marker(folders):
    stages, tmp = folders
    for k in range(3):
        write_lock(stages, _lock(f"p/s{k}"))
    time.sleep(TICK)
    alone = lock_prefetch.start(stages, helper_min=1)  # without a tmp folder: 3 s rule
    assert alone is not None
    alone._proc.wait(timeout=60)
    assert alone.finish() == 0
    marked = lock_prefetch.start(stages, helper_min=1, memo_dir=tmp)
    assert marked is not None
    marked._proc.wait(timeout=60)
    assert marked.finish() == 4
    assert (tmp / _racy.MARKER).is_file()
    for k in range(3):
        assert read_lock(stages, f"p/s{k}") == _lock(f"p/s{k}")
    assert lockfile._FETCHED.keys() == {_name(stages, "p/old")}


def test_the_run_right_after_a_run_writes_the_memo_and_sees_a_rewrite(project, pivot):
    write_files(project, {"pipeline.py": TWO_STAGES})
    pivot("run")
    memo = project / ".pivot" / "tmp" / lock_memo.NAME
    assert "Every stage is up to date" in pivot("run").stdout  # no wait: the marker decides
    assert lock_memo.load(project / ".pivot" / "stages", project / ".pivot" / "tmp") == 2
    lockfile._FETCHED.clear()
    lock = project / ".pivot" / "stages" / "p" / "second.lock"
    text = lock.read_text()
    recorded = text.split('"hash": "')[1][:64]
    rewrite_keeping_mtime(lock, text.replace(recorded, "0" * 64))  # another output hash
    again = pivot("run")
    assert "Every stage is up to date" not in again.stdout
    assert (project / "second.txt").read_text() == "12"
    memo.write_bytes(b"\x93damaged")  # ignored whole: every lock file is read
    assert "Every stage is up to date" in pivot("run").stdout
    assert executions(project) == ["first", "second"]
    assert memo.is_file()
