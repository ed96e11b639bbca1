"""The stat cache's racy rule: a row is trusted only when its file changed before a racy
marker made before it was read (`pivot._racy`), else it is kept smudged and the next
command hashes the file again. Real projects through the real CLI.

A file rewritten with the same size in the same tick of the file system's clock as
Pivot's reading keeps its (size, mtime, inode, ctime) when that clock is coarse. Linux
6.13 and later give a change that follows a `stat` a fine-grained ctime on ext4, xfs,
btrfs and tmpfs ("multigrain" timestamps), which closes the window there; older kernels
and other file systems (NFS, FUSE, vfat) do not. The tests below run Pivot on such a clock:
`COARSE_CLOCK`, loaded into each Pivot process (`sitecustomize`), rounds the mtime and
ctime every `stat` returns down to a tick of 1.1 s (the time of the file system, not of
Pivot), and each test checks that its rewrite fell in the tick of the write it races."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import textwrap

import pytest
from support import COUNTER, PYTHONPATH, executions, rewrite_keeping_mtime, write_files

from pivot.cache.state import SMUDGED

TICK_NS = 1_100_000_000  # under the 2 s of the wall-clock rule; rarely whole seconds
COARSE_CLOCK = f"""
import os

_TICK = {TICK_NS}


def _coarse(st):
    seq, named = st.__reduce__()[1]
    seq, named = list(seq), dict(named)
    for field, index in (("mtime", 8), ("ctime", 9)):
        ns = named[f"st_{{field}}_ns"] // _TICK * _TICK
        named[f"st_{{field}}_ns"] = ns
        named[f"st_{{field}}"] = ns / 1e9
        seq[index] = ns // 1_000_000_000
    return os.stat_result(seq, named)


def _wrap(real):
    def wrapped(*args, **kwargs):
        return _coarse(real(*args, **kwargs))

    return wrapped


os.stat = _wrap(os.stat)
os.lstat = _wrap(os.lstat)
os.fstat = _wrap(os.fstat)
"""

PIPELINE = (
    """
from typing import Annotated

import pivot
"""
    + COUNTER
    + """
pipeline = pivot.Pipeline("p")


def copy(
    raw: Annotated[str, pivot.Dep("raw.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    _count("copy")
    return raw.upper()


pipeline.register(copy)
"""
)


def _tick(ns: int) -> int:
    return ns // TICK_NS


@pytest.fixture
def coarse(tmp_path: pathlib.Path) -> dict[str, str]:
    """The environment of a Pivot process on the coarse clock."""
    folder = tmp_path / "coarse-clock"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(COARSE_CLOCK))
    return {"PYTHONPATH": f"{folder}{os.pathsep}{PYTHONPATH}"}


def _rows(project: pathlib.Path) -> dict[str, int]:
    """Path -> size of every stat-cache row (`SMUDGED`: not trusted)."""
    with sqlite3.connect(project / ".pivot" / "state.db") as conn:
        return dict(conn.execute("SELECT path, size FROM stat_cache_v2"))


def _in_one_tick(write, race) -> None:
    """Run `write` then `race` until both change the file in the same tick of the coarse
    clock (ctime: what the race keeps, with size and mtime); skip after 20 tries."""
    for _ in range(20):
        first = write()
        second = race()
        if _tick(first.st_ctime_ns) == _tick(second.st_ctime_ns):
            return
    pytest.skip("no rewrite fell in the tick of its write")


def test_a_dep_rewritten_in_the_tick_pivot_hashed_it_in_is_seen(project, pivot, coarse):
    write_files(project, {"pipeline.py": PIPELINE, "raw.txt": "aaaa"})
    pivot("run", **coarse)
    assert executions(project) == ["copy"]
    raw = project / "raw.txt"

    def write() -> os.stat_result:
        raw.write_text("aaaa")  # the content the lock knows, written anew
        st = raw.stat()
        pivot("status", **coarse)  # hashes raw.txt and records its row
        return st

    _in_one_tick(write, lambda: rewrite_keeping_mtime(raw, "bbbb"))
    assert _rows(project)["raw.txt"] == SMUDGED  # read in the tick it changed in
    pivot("run", **coarse)
    assert executions(project) == ["copy", "copy"]
    assert (project / "out.txt").read_text() == "BBBB"


def test_an_output_rewritten_in_the_tick_its_stage_wrote_it_in_is_seen(project, pivot, coarse):
    write_files(project, {"pipeline.py": PIPELINE, "raw.txt": "aaaa"})
    out = project / "out.txt"

    def write() -> os.stat_result:
        (project / "raw.txt").write_text(f"a{len(executions(project)):03d}")
        pivot("run", **coarse)
        return out.stat()

    _in_one_tick(write, lambda: rewrite_keeping_mtime(out, "ZZZZ"))
    assert _rows(project)["out.txt"] == SMUDGED
    refused = pivot("run", rc=1, **coarse)  # an edit of an output: kept, and said so
    assert "Refusing to overwrite 1 file(s)" in refused.stderr
    assert "out.txt" in refused.stderr
    assert out.read_text() == "ZZZZ"


def test_an_output_rewritten_in_the_tick_checkout_placed_it_in_is_seen(project, pivot, coarse):
    write_files(project, {"pipeline.py": PIPELINE, "raw.txt": "aaaa"})
    pivot("run", **coarse)
    out = project / "out.txt"

    def write() -> os.stat_result:
        out.unlink()
        pivot("checkout", **coarse)
        return out.stat()

    _in_one_tick(write, lambda: rewrite_keeping_mtime(out, "ZZZZ"))
    assert _rows(project)["out.txt"] == SMUDGED
    refused = pivot("checkout", rc=1, **coarse)
    assert "Refusing to overwrite 1 file(s)" in refused.stderr
    pivot("checkout", "--force", **coarse)
    assert out.read_text() == "AAAA"


def test_a_tracked_file_rewritten_in_the_tick_track_read_it_in_is_not_trusted(
    project, pivot, coarse
):
    data = project / "data.txt"

    def write() -> os.stat_result:
        data.write_text("1234")
        st = data.stat()
        pivot("track", "data.txt", **coarse)
        return st

    _in_one_tick(write, lambda: rewrite_keeping_mtime(data, "5678"))
    assert _rows(project)["data.txt"] == SMUDGED


def test_settled_files_are_trusted_at_once(project, pivot):
    """On this machine's own clock: a dep written before the command and an output of
    8 MiB (read after a marker past the tick it was written in, not left for the next
    command to hash again) are recorded trusted; a small output is trusted, or smudged
    when its stage wrote it in the tick of the marker, and then trusted by the next
    command that reads it."""
    big = """
def big() -> Annotated[bytes, pivot.Out("big.bin", pivot.loaders.Bytes())]:
    return bytes(8 << 20)


pipeline.register(big)
"""
    write_files(project, {"pipeline.py": PIPELINE + big, "raw.txt": "aaaa"})
    pivot("run")
    rows = _rows(project)
    assert rows["raw.txt"] == 4
    assert rows["big.bin"] == 8 << 20
    assert rows["out.txt"] in (4, SMUDGED)  # smudged when written in the marker's tick
    pivot("status")  # the next command reads out.txt again if it was smudged
    assert _rows(project)["out.txt"] == 4
