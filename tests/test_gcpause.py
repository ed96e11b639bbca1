"""The collector pause of one-shot commands: it always ends with the collector on, and a
process forked during it (a worker running stage code) has its collector on. The collector
switch of storing a large folder: back on afterwards, nothing frozen."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
from support import PYTHONPATH

from pivot._gcpause import collector_off, collector_paused


def test_pause_turns_the_collector_back_on_even_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: still paused inside, not resumed by the inner
            pass
        assert not gc.isenabled()
        raise RuntimeError("stage definition failed")
    assert gc.isenabled()
    gc.unfreeze()


def test_a_child_forked_during_the_pause_collects() -> None:
    read, write = os.pipe()
    with collector_paused():
        pid = os.fork()
        if pid == 0:  # the child reports and leaves at once
            os.write(write, b"1" if gc.isenabled() else b"0")
            os._exit(0)
        assert not gc.isenabled()
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    gc.unfreeze()


def test_a_program_that_turned_the_collector_off_keeps_it_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_collector_off_turns_it_back_on_and_freezes_nothing() -> None:
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError), collector_off():
        assert not gc.isenabled()
        with collector_off():  # nested: the inner one leaves it to the outer
            pass
        assert not gc.isenabled()
        raise RuntimeError("a file of the output vanished")
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_collector_off_keeps_a_program_s_choice_to_turn_it_off() -> None:
    gc.disable()
    try:
        with collector_off():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_storing_a_folder_output_leaves_the_collector_on(tmp_path) -> None:
    from pivot.cache.objects import LocalCache

    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(3):
        (folder / f"f{k}.txt").write_text(f"file {k}\n")
    cache = LocalCache(tmp_path / ".pivot" / "cache", tmp_path / ".pivot" / "tmp")
    stored, rows = cache.add_output(folder, tmp_path)
    assert gc.isenabled()
    assert [entry.relpath for entry in cache.tree(stored.hash)] == ["f0.txt", "f1.txt", "f2.txt"]
    assert len(rows) == 3


IMPORT_PROBE = """
import gc
from pivot.cli.main import cli
import click
cli.get_command(click.Context(cli), "run")
print(gc.isenabled(), gc.get_freeze_count() > 0)
"""


def test_the_cli_imports_its_command_with_the_collector_paused_then_on() -> None:
    """Importing the command's modules freezes them, and leaves the collector on."""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        check=True,
    )
    assert proc.stdout.split() == ["True", "True"]
