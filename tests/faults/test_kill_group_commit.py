"""kill -9 of `pivot run` while stages that finished wait for the scheduler's group commit
(their blobs staged, their run records and lock files not yet written): every lock file
and run record left behind names blobs that are whole in the cache, none is half-written,
and the next run records what the kill lost."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from support import PYTHONPATH, PivotCLI, kill_when, start_pivot_group, write_files

from pivot.cache.hashing import DIR
from pivot.cache.objects import LocalCache
from pivot.cache.runs import RunRecords
from pivot.run.lockfile import all_locks, read_lock

CHAIN = 24

HEADER = """
import pathlib
from typing import Annotated

import pivot
from pivot.define.loaders import PathOnly, Text

pipeline = pivot.Pipeline("p")
"""

STAGE = """

def s{i}(src: Annotated[str, pivot.Dep({dep!r}, Text())]) -> Annotated[str, pivot.Out("out_{i}.txt", Text())]:
    return f"{{int(src) + 1}}\\n"


pipeline.register(s{i})
"""

EXTRA = """

def tree(src: Annotated[str, pivot.Dep("out_3.txt", Text())]) -> Annotated[pathlib.Path, pivot.Out("tree", PathOnly())]:
    for k in range(5):
        pathlib.Path("tree/sub").mkdir(parents=True, exist_ok=True)
        pathlib.Path(f"tree/sub/f{k}.txt").write_text(f"{src.strip()} {k}\\n")
    return pathlib.Path("tree")


def score(src: Annotated[str, pivot.Dep("out_5.txt", Text())]) -> Annotated[dict, pivot.Metric("score.json")]:
    return {"value": int(src)}


pipeline.register(tree)
pipeline.register(score)
"""


def _pipeline() -> str:
    text = HEADER
    for i in range(CHAIN):
        text += STAGE.format(i=i, dep="seed.txt" if i == 0 else f"out_{i - 1}.txt")
    return text + EXTRA


def _check_recorded(root: pathlib.Path) -> int:
    """Every lock file and run record parses and names blobs that are whole in the cache
    (read back verified, tree manifests and their entries too); returns how many locks."""
    cache = LocalCache(root / ".pivot" / "cache", root / ".pivot" / "tmp")

    def whole(outs: dict) -> None:
        for out in outs.values():
            cache.read_bytes(out["hash"])  # raises if absent or not matching its hash
            if out["kind"] == DIR:
                for entry in cache.tree(out["hash"]):
                    cache.read_bytes(entry.hash)

    stages = root / ".pivot" / "stages"
    locks = 0
    for stage_id in all_locks(stages):
        lock = read_lock(stages, stage_id)
        assert lock is not None
        whole(lock.outs)
        locks += 1
    records = RunRecords(root / ".pivot" / "cache")
    for key in records.keys():  # noqa: SIM118 (a method of RunRecords, not a dict)
        outs = records.get(key)
        assert outs is not None, f"run record {key} is damaged"
        whole(outs)
    return locks


def test_a_kill_during_the_group_commit_window_leaves_only_whole_records(
    project: pathlib.Path, pivot: PivotCLI
):
    write_files(project, {"seed.txt": "0\n", "pipeline.py": _pipeline()})
    killed = 0
    # Kill as stage s3 (then s11, s19) writes its output: the stages before it finished
    # less than the commit window ago, so some are recorded and some not yet.
    for i in range(3, CHAIN, 8):
        if kill_when(
            start_pivot_group(project, "run", "-j", "1"), (project / f"out_{i}.txt").exists
        ):
            killed += 1
        _check_recorded(project)
    assert killed, "every run finished before it could be killed"
    pivot("run", "-j", "1")
    assert _check_recorded(project) == CHAIN + 2
    assert (project / f"out_{CHAIN - 1}.txt").read_text() == f"{CHAIN}\n"
    assert json.loads((project / "score.json").read_text()) == {"value": 6}
    lock = json.loads((project / ".pivot" / "stages" / "p" / "score.lock").read_text())
    assert lock["metrics"]["score.json"] == {"value": 6}
    assert "Every stage is up to date" in pivot("run").stdout
    assert list((project / ".pivot" / "tmp").glob("blob.*")) == []


def test_lock_temps_a_kill_left_are_removed_by_the_next_command(
    project: pathlib.Path, pivot: PivotCLI
):
    write_files(project, {"seed.txt": "0\n", "pipeline.py": _pipeline()})
    pivot("run", "-j", "1")
    stages = project / ".pivot" / "stages" / "p"
    # What a kill between writing and renaming a lock file leaves (`_fs.write_temp`).
    left = [stages / ".s0.lock.k3j2h1x9.tmp", stages / ".score.lock.a_b7c8d9.tmp"]
    for path in left:
        path.write_text('{"half": ')
    kept = stages / "notes.txt"
    kept.write_text("not Pivot's\n")
    assert "Every stage is up to date" in pivot("run").stdout
    assert [p for p in left if p.exists()] == []
    assert kept.read_text() == "not Pivot's\n"
    assert read_lock(project / ".pivot" / "stages", "p/s0") is not None


# A process that writes a run record's and a tracked-data record's temp files the way
# Pivot does (`_fs.write_temp`, the group commit's first step), says where, and waits to
# be killed before it renames them.
WRITER = """
import pathlib, sys, time
from pivot import _fs
from pivot.cache.runs import RunRecords, encode_record
root = pathlib.Path(sys.argv[1])
record = RunRecords(root / ".pivot" / "cache").path("ab" * 32)
tracked = root / ".pivot" / "tracked" / "data" / "raw.csv.json"
for path in (record, tracked):
    print(_fs.write_temp(path, encode_record({})), flush=True)
time.sleep(600)
"""


def test_record_temps_a_kill_left_are_removed_by_the_next_command(
    project: pathlib.Path, pivot: PivotCLI
):
    write_files(project, {"seed.txt": "0\n", "pipeline.py": _pipeline()})
    pivot("run", "-j", "1")
    records = RunRecords(project / ".pivot" / "cache")
    keys = sorted(records.keys())
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(project)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    left = [pathlib.Path(writer.stdout.readline().strip()) for _ in range(2)]
    writer.kill()  # SIGKILL: the temps stay, as after a kill inside the group commit
    writer.wait()
    assert all(path.is_file() for path in left)
    assert left[0].parent.parent == records.root
    assert "Every stage is up to date" in pivot("run").stdout
    assert [str(p) for p in left if p.exists()] == []
    assert sorted(records.keys()) == keys
    assert all(records.get(key) is not None for key in keys)
