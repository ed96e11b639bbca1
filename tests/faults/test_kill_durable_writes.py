"""The durable write (`_fs.write_bytes`: temp file, fsync, rename, fsync of the folder):
the file whole under its name and no temp left, folders it creates reported for syncing,
and kill -9 of a process rewriting a lock file in a loop leaves the old or the new file,
never half, and only temps the next command's sweep removes. (That the folder fsync makes
the rename survive a power loss cannot be shown without cutting the power: these tests
hold what a kill can show.)"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from support import PYTHONPATH

from pivot import _fs
from pivot.project import Project


def test_a_durable_write_into_new_folders_leaves_the_file_and_no_temp(tmp_path: pathlib.Path):
    target = tmp_path / "a" / "b" / "f.lock"
    _fs.write_bytes(target, [b"one ", b"two"], mode=0o644)
    assert target.read_bytes() == b"one two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.lock"]
    _fs.write_bytes(target, b"three")
    assert target.read_bytes() == b"three"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.lock"]


def test_make_folder_names_the_folders_whose_entries_changed(tmp_path: pathlib.Path):
    deep = tmp_path / "x" / "y" / "z"
    assert sorted(_fs.make_folder(deep)) == sorted([tmp_path, tmp_path / "x", tmp_path / "x" / "y"])
    assert deep.is_dir()
    assert _fs.make_folder(deep) == []
    with ThreadPoolExecutor(4) as pool:  # real fsyncs of real folders, repeated ones once
        _fs.sync_folders([deep, tmp_path, deep, tmp_path / "x"], pool)
    _fs.sync_folders([deep])


REWRITER = """
import json, pathlib, sys
from pivot import _fs
path = pathlib.Path(sys.argv[1])
i = 0
while True:
    _fs.write_bytes(path, json.dumps({"version": i, "pad": "x" * 4096 * (i % 7)}).encode())
    if i == 20:
        print("ready", flush=True)
    i += 1
"""


def test_kill_of_a_process_rewriting_a_lock_leaves_it_whole(project: pathlib.Path):
    lock = project / ".pivot" / "stages" / "p" / "s.lock"
    for _ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", REWRITER, str(lock)],
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        data = json.loads(lock.read_text())  # whole: the old or the new version
        assert data["pad"] == "x" * 4096 * (data["version"] % 7)
    others = [p for p in lock.parent.iterdir() if p != lock]
    assert set(others) <= set(Project.discover(project).stale_temps())
