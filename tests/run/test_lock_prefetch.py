"""Lock files read and validated by a helper process while the pipelines load: a real
helper on real files. What it hands over equals what `read_lock` reads itself, a lock
file it refused or could not read is read and reported here, a file changed after the
helper read it (or within the racy window) is read again, and a helper that failed or was
stopped early only leaves more files to read here. End to end: `pivot run` in a project
with enough lock files for the helper still says "up to date" only when it is, and names
a crafted lock file."""

from __future__ import annotations

import os
import pathlib
import time

import pytest
from support import TWO_STAGES, executions, write_files

from pivot.errors import PivotError
from pivot.project import Project
from pivot.run import lock_prefetch, lockfile
from pivot.run.lockfile import Lock, read_lock, write_lock

A, B, K1, K2 = "a" * 64, "b" * 64, "c" * 64, "d" * 64
GOOD = ["p/s0", "p/s1", "q/r/s2"]


def _lock(stage_id: str, run_key: str = K1) -> Lock:
    return Lock(
        stage_id=stage_id,
        run_key=run_key,
        fingerprint={"func:s": "1" * 8},
        params={"limit": [1, 2.5, None], "name": "été"},
        deps={"raw.txt": B},
        outs={"out.txt": {"hash": A, "size": 5, "kind": "file"}},
        metrics={"out.txt": {"acc": 0.5}},
    )


@pytest.fixture(scope="module")
def old_stages(tmp_path_factory) -> pathlib.Path:
    """A stages folder of three good lock files and two unusable ones, all changed more
    than the racy window (3 s) ago."""
    stages = tmp_path_factory.mktemp("stages")
    for stage_id in GOOD:
        write_lock(stages, _lock(stage_id))
    (stages / "p" / "broken.lock").write_text("{")
    crafted = _lock("p/crafted").to_json().replace('"out.txt"', '"../outside.txt"')
    (stages / "p" / "crafted.lock").write_text(crafted)
    time.sleep(3.2)
    return stages


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(lockfile, "_READ", {})
    monkeypatch.setattr(lockfile, "_FETCHED", {})


def _finished(prefetch: lock_prefetch.Prefetch | None) -> int:
    """What the helper handed over once it ran to its end."""
    assert prefetch is not None
    prefetch._proc.wait(timeout=60)
    return prefetch.finish()


def test_the_helper_hands_over_exactly_the_locks_read_lock_reads(old_stages):
    assert _finished(lock_prefetch.start(old_stages, helper_min=1)) == len(GOOD)
    for stage_id in GOOD:
        assert read_lock(old_stages, stage_id) == _lock(stage_id)
    with pytest.raises(PivotError, match=r"broken\.lock"):
        read_lock(old_stages, "p/broken")
    with pytest.raises(PivotError, match=r"\.\./outside\.txt"):
        read_lock(old_stages, "p/crafted")


def test_a_lock_file_changed_after_the_helper_read_it_is_read_again(old_stages, tmp_path):
    stages = tmp_path / "stages"
    (stages / "p").mkdir(parents=True)
    for stage_id in ("p/s0", "p/s1"):
        (stages / f"{stage_id}.lock").write_text(_lock(stage_id).to_json())
        old = time.time() - 60
        os.utime(stages / f"{stage_id}.lock", (old, old))
    time.sleep(3.2)  # the ctime, which no program can set back, leaves the racy window
    assert _finished(lock_prefetch.start(stages, helper_min=1)) == 2
    path = stages / "p" / "s0.lock"
    before = os.stat(path)
    with open(path, "r+b") as f:  # in place: same inode, same size, mtime set back
        f.write(path.read_bytes().replace(K1.encode(), K2.encode()))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert read_lock(stages, "p/s0").run_key == K2
    assert read_lock(stages, "p/s1").run_key == K1


def test_a_lock_file_inside_the_racy_window_is_left_to_this_process(old_stages):
    write_lock(old_stages, _lock("p/new", K2))
    try:
        assert _finished(lock_prefetch.start(old_stages, helper_min=1)) == len(GOOD)
        assert "p/new" not in {raw["stage"] for _, raw in lockfile._FETCHED.values()}
        assert read_lock(old_stages, "p/new") == _lock("p/new", K2)
    finally:
        (old_stages / "p" / "new.lock").unlink()


def test_a_helper_stopped_at_once_or_failing_leaves_the_files_to_this_process(
    old_stages, monkeypatch
):
    prefetch = lock_prefetch.start(old_stages, helper_min=1)
    assert prefetch is not None
    assert prefetch.finish() in (0, len(GOOD))  # stopped at once: nothing, or all if it won
    assert [read_lock(old_stages, s) for s in GOOD] == [_lock(s) for s in GOOD]
    monkeypatch.setattr(lockfile, "_FETCHED", {})
    monkeypatch.setattr(lock_prefetch, "_HELPER", "import sys; sys.exit(3)")
    assert _finished(lock_prefetch.start(old_stages, helper_min=1)) == 0
    assert [read_lock(old_stages, s) for s in GOOD] == [_lock(s) for s in GOOD]


# A helper that hands over, for the good file p/s0.lock (with its true stat key), a lock
# naming an output outside the project: what a damaged memory file between the two
# processes would carry.
_CRAFTING_HELPER = """\
import marshal, os, struct, sys
path, stages_dir, _ = marshal.load(sys.stdin.buffer)
sys.path[:0] = path
from pivot.run import lockfile
name = os.path.join(stages_dir, "p", "s0.lock")
key, raw, _ = lockfile.read_validated(name)
raw["outs"] = {"../outside.txt": raw["outs"]["out.txt"]}
raw["metrics"] = {}
data = marshal.dumps([(name, key, raw)])
sys.stdout.buffer.write(struct.pack("<I", len(data)) + data)
"""


def test_what_a_helper_hands_over_is_validated_where_it_is_used(old_stages, monkeypatch):
    """The crafted lock is refused at use and the file itself, which is sound, read: a
    damaged hand-over neither leaks through nor blames a good lock file."""
    monkeypatch.setattr(lock_prefetch, "_HELPER", _CRAFTING_HELPER)
    assert _finished(lock_prefetch.start(old_stages, helper_min=1)) == 1
    assert read_lock(old_stages, "p/s0") == _lock("p/s0")


def test_a_helper_output_of_the_wrong_shape_is_dropped(old_stages, monkeypatch):
    monkeypatch.setattr(
        lock_prefetch,
        "_HELPER",
        "import marshal, struct, sys\n"
        "data = marshal.dumps([('x', 1)])\n"
        "sys.stdout.buffer.write(struct.pack('<I', len(data)) + data)\n",
    )
    assert _finished(lock_prefetch.start(old_stages, helper_min=1)) == 0
    assert [read_lock(old_stages, s) for s in GOOD] == [_lock(s) for s in GOOD]


def test_a_helper_output_that_breaks_the_decoder_is_dropped(old_stages, monkeypatch):
    """Bytes that make `marshal` raise other than its usual decode errors (a code object
    with a negative argument count: `SystemError` on CPython 3.11 to 3.13)."""
    monkeypatch.setattr(
        lock_prefetch,
        "_HELPER",
        "import marshal, struct, sys\n"
        "data = bytearray(marshal.dumps(compile('1', 'x', 'exec')))\n"
        "data[4] = 0x80\n"
        "sys.stdout.buffer.write(struct.pack('<I', len(data)) + data)\n",
    )
    assert _finished(lock_prefetch.start(old_stages, helper_min=1)) == 0
    assert [read_lock(old_stages, s) for s in GOOD] == [_lock(s) for s in GOOD]


def test_no_helper_for_a_few_lock_files(old_stages):
    assert lock_prefetch.start(old_stages) is None  # five files, below HELPER_MIN
    assert lock_prefetch.start(old_stages / "absent", helper_min=1) is None


def test_a_run_with_the_helper_trusts_only_what_it_would_read_itself(project, pivot):
    write_files(project, {"pipeline.py": TWO_STAGES})
    pivot("run")
    stages = project / ".pivot" / "stages"
    # Lock files of a pipeline no longer in the project: enough for the helper to start.
    (stages / "gone").mkdir()
    for k in range(lock_prefetch.HELPER_MIN):
        (stages / "gone" / f"s{k}.lock").write_text(_lock(f"gone/s{k}").to_json())
    lock = stages / "p" / "first.lock"
    lock.write_text(lock.read_text().replace('"first.txt"', '"../first.txt"'))
    time.sleep(3.2)  # every lock file leaves the racy window: the helper reads them all
    again = pivot("run")
    assert "Every stage is up to date" not in again.stdout
    assert "first.lock" in again.stderr and "../first.txt" in again.stderr
    assert "restored  p/first" in again.stdout  # from its run record: the lock is refused
    assert not (project.parent / "first.txt").exists()
    assert "Every stage is up to date" in pivot("run").stdout
    assert executions(project) == ["first", "second"]
    assert (project / "second.txt").read_text() == "12"


RUN = ["pivot", "run", "--all"]


def test_the_helper_started_before_the_imports_is_handed_to_its_projects_run(tmp_path, monkeypatch):
    stages = tmp_path / "proj" / ".pivot" / "stages"
    (stages / "p").mkdir(parents=True)
    for k in range(lock_prefetch.HELPER_MIN):
        (stages / "p" / f"s{k}.lock").write_text(_lock(f"p/s{k}").to_json())
    monkeypatch.chdir(tmp_path / "proj" / ".pivot")  # anywhere inside the project
    for argv in (["pivot", "run", "--help"], ["pivot", "run", "x", "-h"], ["pivot"]):
        lock_prefetch.start_early(argv)  # help, or a shell completion: nothing to read
        assert lock_prefetch._EARLY == {}
    lock_prefetch.start_early(RUN)
    early = lock_prefetch._EARLY.get(str(stages.resolve()))
    assert early is not None
    assert lock_prefetch.take(Project(stages.parent.parent.resolve())) is early
    early.cancel()
    lock_prefetch.start_early(RUN)
    other = lock_prefetch._EARLY[str(stages.resolve())]
    assert lock_prefetch.take(Project(tmp_path / "absent")) is None  # another project
    assert other._proc.returncode is not None and lock_prefetch._EARLY == {}
