"""The memo of decoded lock files kept between commands (`run.lock_memo`): real files in a
temp folder. A lock read through the memo equals the file; a file rewritten with the same
size and mtime, deleted, or changed within the racy window is read from disk; a memo that
is damaged, crafted, of another project or of another shape hands nothing over (every lock
file is read), and never raises. End to end: `pivot run` writes the memo, and a lock file
rewritten in place after it still decides the run."""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivot.errors import PivotError
from pivot.run import lock_memo, lock_prefetch, lockfile
from pivot.run.lockfile import Lock, read_lock, write_lock

A, B, C, K1 = "a" * 64, "b" * 64, "c" * 64, "d" * 64
IDS = ["p/s0", "p/s1", "q/r/s2"]


def _lock(stage_id: str, out_hash: str = A) -> Lock:
    return Lock(
        stage_id=stage_id,
        run_key=K1,
        fingerprint={"func:s": "1" * 8},
        params={"limit": [1, 2.5, None], "name": "été"},
        deps={"raw.txt": B},
        outs={"out.txt": {"hash": out_hash, "size": 5, "kind": "file"}},
        metrics={"out.txt": {"acc": 0.5}},
    )


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(lockfile, "_READ", {})
    monkeypatch.setattr(lockfile, "_FETCHED", {})
    monkeypatch.setattr(lock_memo, "_LOADED", {})


def _forget() -> None:
    """A new command: nothing read by this process yet."""
    lockfile._READ.clear()
    lockfile._FETCHED.clear()
    lock_memo._LOADED.clear()


@pytest.fixture
def stored(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """A project's stages and tmp folders: three lock files changed more than the racy
    window ago, read once and remembered in the memo."""
    stages, tmp = tmp_path / ".pivot" / "stages", tmp_path / ".pivot" / "tmp"
    tmp.mkdir(parents=True)
    for stage_id in IDS:
        write_lock(stages, _lock(stage_id))
    old = time.time_ns() - 10_000_000_000
    for stage_id in IDS:
        os.utime(lockfile.lock_path(stages, stage_id), ns=(old, old))
    time.sleep(3.1)  # the ctimes leave the racy window too
    for stage_id in IDS:
        read_lock(stages, stage_id)
    lock_memo.store(stages, tmp)
    assert (tmp / lock_memo.NAME).is_file()
    _forget()
    return stages, tmp


def test_locks_from_the_memo_equal_the_files(stored):
    stages, tmp = stored
    assert lock_memo.load(stages, tmp) == len(IDS)
    for stage_id in IDS:
        assert read_lock(stages, stage_id) == _lock(stage_id)
    assert lockfile._FETCHED == {}  # every one handed over from the memo
    mtime = (tmp / lock_memo.NAME).stat().st_mtime_ns
    lock_memo.store(stages, tmp)  # unchanged: not written again
    assert (tmp / lock_memo.NAME).stat().st_mtime_ns == mtime


def test_a_rewrite_with_the_same_size_and_mtime_is_read_from_the_file(stored):
    stages, tmp = stored
    path = lockfile.lock_path(stages, "p/s1")
    before = path.stat()
    path.write_text(_lock("p/s1", out_hash=C).to_json())  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert lock_memo.load(stages, tmp) == len(IDS)
    assert read_lock(stages, "p/s1").outs["out.txt"]["hash"] == C


def test_a_deleted_lock_file_is_absent_and_leaves_the_memo(stored):
    stages, tmp = stored
    lockfile.lock_path(stages, "p/s0").unlink()
    assert lock_memo.load(stages, tmp) == len(IDS)
    assert read_lock(stages, "p/s0") is None
    assert read_lock(stages, "p/s1") == _lock("p/s1")
    lock_memo.store(stages, tmp)
    _forget()
    assert lock_memo.load(stages, tmp) == len(IDS) - 1


def test_the_memo_keeps_the_locks_a_command_did_not_ask_for(stored):
    stages, tmp = stored
    lock_memo.load(stages, tmp)
    path = lockfile.lock_path(stages, "p/s0")
    path.write_text(_lock("p/s0", out_hash=C).to_json())
    read_lock(stages, "p/s0")  # changed just now: not remembered
    lockfile.lock_path(stages, "q/r/s2").unlink()  # never asked for, and gone
    lock_memo.store(stages, tmp)
    _forget()
    assert lock_memo.load(stages, tmp) == 1
    assert read_lock(stages, "p/s0").outs["out.txt"]["hash"] == C
    assert read_lock(stages, "p/s1") == _lock("p/s1")
    assert read_lock(stages, "q/r/s2") is None


def test_a_lock_file_changed_within_the_racy_window_is_not_remembered(tmp_path):
    stages, tmp = tmp_path / "stages", tmp_path / "tmp"
    tmp.mkdir()
    write_lock(stages, _lock("p/s0"))
    read_lock(stages, "p/s0")
    lock_memo.store(stages, tmp)
    _forget()
    assert lock_memo.load(stages, tmp) == 0


def test_a_memo_of_another_project_hands_nothing_over(stored, tmp_path):
    stages, tmp = stored
    copy = tmp_path / "copy" / ".pivot"
    shutil.copytree(stages.parent, copy)  # its stages folder is another folder
    assert lock_memo.load(copy / "stages", copy / "tmp") == 0
    assert read_lock(copy / "stages", "p/s0") == _lock("p/s0")
    os.replace(copy / "tmp" / lock_memo.NAME, tmp / "other")
    assert lock_memo.load(copy / "stages", tmp) == 0


def _record(stages: pathlib.Path) -> list:
    st = os.stat(stages)
    return [lock_memo.FORMAT, [st.st_dev, st.st_ino]]


def test_a_crafted_memo_hands_nothing_over_or_is_refused_at_use(stored):
    stages, tmp = stored
    memo = tmp / lock_memo.NAME
    good = msgpack.unpackb(memo.read_bytes())
    form, folder, ids, keys, raws = good
    crafted = [
        [form, folder, ["../../p/s0", *ids[1:]], keys, raws],  # outside the stages folder
        [form, folder, ["/p/s0", *ids[1:]], keys, raws],
        [form, folder, ids, [*keys[:-1], 1.5], raws],  # a key that is not integers
        [form, folder, ids, keys[:-4], raws],  # lengths that do not match
        [form, folder, ids, keys, raws[:-1]],
        ["pivot-lock-memo-0", folder, ids, keys, raws],
        [form, [0, 0], ids, keys, raws],
        [form, folder, ids],
        {"format": form},
    ]
    for record in crafted:
        _forget()
        memo.write_bytes(msgpack.packb(record))
        assert lock_memo.load(stages, tmp) == 0
    for damaged in (memo.read_bytes()[:-7], b"", b"\xc1", msgpack.packb(good)[:100]):
        memo.write_bytes(damaged)
        assert lock_memo.load(stages, tmp) == 0
    # Right keys, a lock that does not validate: refused at use, the file read instead.
    bad = [dict(raw) for raw in raws]
    bad[0]["outs"] = {"../outside.txt": bad[0]["outs"]["out.txt"]}
    memo.write_bytes(msgpack.packb([form, folder, ids, keys, bad]))
    assert lock_memo.load(stages, tmp) == len(IDS)
    assert [read_lock(stages, s) for s in IDS] == [_lock(s) for s in IDS]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400), cut=st.integers(min_value=0, max_value=2_000))
def test_any_memo_bytes_leave_read_lock_right(stored, data, cut):
    stages, tmp = stored
    memo = tmp / lock_memo.NAME
    good = msgpack.packb([*_record(stages), IDS, [0] * 12, [{}] * 3])
    for blob in (data, good[:cut] + data):
        _forget()
        memo.write_bytes(blob)
        lock_memo.load(stages, tmp)  # never raises
        for name in lockfile._FETCHED:
            assert name.startswith(os.path.join(stages, "")) and "/../" not in name
        assert [read_lock(stages, s) for s in IDS] == [_lock(s) for s in IDS]


def test_no_lock_file_helper_once_the_memo_exists(stored):
    stages, tmp = stored
    for k in range(4):
        write_lock(stages, _lock(f"many/s{k}"))
    assert lock_memo.exists(tmp)
    assert lock_prefetch.start(stages, helper_min=1, memo_dir=tmp) is None


def test_an_unusable_lock_file_is_named_with_the_memo_in_place(stored):
    stages, tmp = stored
    lockfile.lock_path(stages, "p/s1").write_text("{")
    lock_memo.load(stages, tmp)
    with pytest.raises(PivotError, match=r"s1\.lock"):
        read_lock(stages, "p/s1")
