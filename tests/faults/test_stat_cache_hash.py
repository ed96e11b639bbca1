"""A stat cache row is trusted for its stat key only when its hash is a hash: the state db
is read from disk, so a row whose key matches but whose hash is a path or any other text
is a miss (the file is read again), never a digest that names a cache object."""

from __future__ import annotations

import sqlite3

from support import write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def make(
    src: Annotated[str, pivot.Dep("in.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return src.upper()


pipeline.register(make)
"""


def test_a_stat_row_with_a_path_for_a_hash_is_read_again(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "in.txt": "data"})
    pivot("run")
    with sqlite3.connect(project / ".pivot" / "state.db") as db:
        changed = db.execute(
            "UPDATE stat_cache_v2 SET hash = ? WHERE path = 'in.txt'", ("../" * 8 + "etc",)
        ).rowcount
    assert changed == 1
    (project / ".pivot" / "tmp" / "verdict.msgpack").unlink(missing_ok=True)
    out = pivot("status").stdout
    assert "will run" not in out and "up to date" in out
    pivot("run")
    with sqlite3.connect(project / ".pivot" / "state.db") as db:
        (digest,) = db.execute("SELECT hash FROM stat_cache_v2 WHERE path = 'in.txt'").fetchone()
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
