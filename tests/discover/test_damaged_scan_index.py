"""A damaged, foreign or crafted pipeline-scan index in `.pivot/state.db` (the state db is
untrusted like every file read from disk) is no index: the project is scanned again and
the right pipelines are listed, never a crash, a wrong list or a file loaded from where the
scan never looks."""

from __future__ import annotations

import os
import sqlite3

import msgpack
import pytest
from support import word_pipeline, write_files

from pivot.discover.finder import INDEX_KEY, INDEX_NAMESPACE, decode_index

# Imported, it leaves a mark: the scan never loads a pipeline in a hidden folder.
HIDDEN = "import pathlib\npathlib.Path(__file__).parent.joinpath('imported').write_text('x')\n"


def _index(project) -> bytes | None:
    with sqlite3.connect(project / ".pivot/state.db") as db:
        row = db.execute(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?", (INDEX_NAMESPACE, INDEX_KEY)
        ).fetchone()
    db.close()
    return row[0] if row else None


def _set_index(project, value: bytes) -> None:
    with sqlite3.connect(project / ".pivot/state.db") as db:
        db.execute(
            "UPDATE kv SET value = ? WHERE namespace = ? AND key = ?",
            (value, INDEX_NAMESPACE, INDEX_KEY),
        )
    db.close()


def _mtime(path) -> int:
    return os.stat(path).st_mtime_ns


def _crafted(project, good: bytes) -> dict[str, bytes]:
    """Indexes that name real files with their real stat, or are damaged."""
    index = msgpack.unpackb(good, raw=False)
    hidden = project / ".hidden/pipeline.py"
    st = hidden.stat()
    into_hidden = {
        "dirs": {**index["dirs"], ".hidden": _mtime(hidden.parent)},
        "files": {**index["files"], ".hidden/pipeline.py": [st.st_mtime_ns, st.st_size, []]},
        "stages": index["stages"],
    }
    outside = project.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "pipeline.py").write_text(HIDDEN)
    st = (outside / "pipeline.py").stat()
    climbing = {
        "dirs": index["dirs"],
        "files": {**index["files"], "../outside/pipeline.py": [st.st_mtime_ns, st.st_size, []]},
        "stages": index["stages"],
    }
    # The sub pipeline dropped, its folder with it: the root's listing is unchanged, so
    # only the shape (a file's folder must be listed) tells.
    dropped = {
        "dirs": {k: v for k, v in index["dirs"].items() if k != "sub"},
        "files": index["files"],
        "stages": index["stages"],
    }
    return {
        "garbage": b"\x00not msgpack\xff",
        "truncated": good[: len(good) // 2],
        "trailing bytes": good + b"\x00",
        "wrong shape": msgpack.packb({"dirs": [], "files": {}, "stages": {}}),
        "a list for a file": msgpack.packb({**index, "files": {"pipeline.py": 3}}),
        "a text mtime": msgpack.packb({**index, "dirs": {**index["dirs"], ".": "now"}}),
        "an output outside": msgpack.packb(
            {**index, "stages": {**index["stages"], "p/make": ["../../etc/passwd"]}}
        ),
        "into a hidden folder": msgpack.packb(into_hidden, use_bin_type=True),
        "out of the project": msgpack.packb(climbing, use_bin_type=True),
        "a file in no listed folder": msgpack.packb(dropped, use_bin_type=True),
    }


@pytest.fixture
def scanned(project, pivot):
    """A project of two pipelines (the root's p, sub's q) and a hidden one that is never
    scanned, listed once (the index written)."""
    write_files(
        project,
        {
            "pipeline.py": word_pipeline("one"),
            "sub/pipeline.py": word_pipeline("two").replace('"p"', '"q"'),
            ".hidden/pipeline.py": HIDDEN,
        },
    )
    listed = pivot("list", "--all").stdout
    assert "p/make" in listed and "q/make" in listed
    good = _index(project)
    assert good is not None and decode_index(good) is not None
    return good


def test_every_damaged_index_is_a_rescan_with_the_right_stages(project, pivot, scanned):
    for what, value in _crafted(project, scanned).items():
        _set_index(project, value)
        done = pivot("list", "--all")
        assert "Traceback" not in done.stderr and "Internal error" not in done.stderr, what
        assert "p/make" in done.stdout and "q/make" in done.stdout, (what, done.stdout)
        assert "etc/passwd" not in done.stdout, what
        assert not (project / ".hidden/imported").exists(), what
        assert not (project.parent / "outside/imported").exists(), what
        assert decode_index(_index(project)) is not None, what  # written again, whole


def test_a_damaged_index_is_a_rescan_for_run_too(project, pivot, scanned):
    _set_index(project, b"\x93\x01\x02")
    assert "ran" in pivot("run", "--all").stdout
    assert (project / "out.txt").read_text() == "one" * 100
    assert (project / "sub/out.txt").read_text() == "two" * 100
    assert not (project / ".hidden/imported").exists()
