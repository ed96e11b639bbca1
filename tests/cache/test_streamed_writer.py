"""A streamed tree checkout (`cache/streamed.py`) has its files created by a child process
(`cache/tree_writer.py`): the files it writes are right and their stat-cache rows match
them; a file it cannot create fails the checkout naming it, with nothing placed; and when
the child cannot be started, every file is placed from the cache instead. The rows staged
while the child writes reach the state db only once kept, never from a failed or
discarded stream."""

from __future__ import annotations

import os
import sys

import pytest
from cache_support import TREE, expected, snapshot, write_tree

from pivot.cache.checkout import LinkMode
from pivot.cache.state import StateDB
from pivot.cache.streamed import StreamedTree
from pivot.errors import PivotError


@pytest.fixture
def stored(tmp_path, cache):
    src = write_tree(tmp_path / "src", TREE)
    out = cache.add_output(src, tmp_path)[0]
    return out.hash, cache.tree(out.hash)


def stream(cache, stored, dest, state: StateDB | None = None) -> StreamedTree:
    digest, entries = stored
    staged = state.staging() if state is not None else None
    return StreamedTree(cache, digest, entries, dest, LinkMode.COPY, "out/", staged)


def stored_rows(state: StateDB) -> list[tuple]:
    """The stat cache's rows, after committing what `state` holds."""
    state.commit()
    return state.conn.execute("SELECT * FROM stat_cache_v2 ORDER BY path").fetchall()


def offer_all(tree: StreamedTree, cache, entries) -> None:
    tree.offer([(e.hash, cache.read_bytes(e.hash)) for e in entries])


def test_the_child_writes_the_offered_files_and_their_rows_match_them(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    state = StateDB(tmp_path / "state.db")
    tree = stream(cache, stored, dest, state)
    offer_all(tree, cache, stored[1])
    rows, placed = tree.finish()
    assert tree.staged is not None
    state.keep(tree.staged, rows, 1 << 62)  # every file settled

    assert stored_rows(state) == sorted(rows)  # each row staged, then committed once kept
    state.close()
    assert snapshot(dest) == expected(TREE)
    assert placed == []  # every file came from the child
    assert sorted(r[0] for r in rows) == sorted(f"out/{rel}" for rel in TREE)
    for rel, size, mtime, ino, ctime, digest in rows:
        st = os.stat(tmp_path / "ws" / rel)
        assert (size, mtime, ino, ctime) == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        assert digest == next(e.hash for e in stored[1] if f"out/{e.relpath}" == rel)
    assert [p.name for p in dest.parent.iterdir()] == ["out"]


def test_a_file_the_child_cannot_create_fails_the_checkout_and_places_nothing(
    tmp_path, cache, stored
):
    dest = tmp_path / "ws" / "out"
    state = StateDB(tmp_path / "state.db")
    tree = stream(cache, stored, dest, state)
    (hidden,) = [p for p in dest.parent.iterdir() if ".pivot-tmp-" in p.name]
    (hidden / "a.txt").write_bytes(b"in the way\n")  # the child's O_EXCL create fails
    offer_all(tree, cache, stored[1])

    with pytest.raises((OSError, PivotError)) as info:
        tree.finish()
    assert "a.txt" in str(info.value)
    assert list(dest.parent.iterdir()) == []  # no output, no hidden tree left
    assert stored_rows(state) == []  # nor a row of a file written before the failure
    state.close()


@pytest.mark.parametrize("executable", ["/bin/true", "/nonexistent/python"])
def test_without_the_child_every_file_is_placed_from_the_cache(
    tmp_path, cache, stored, monkeypatch, executable
):
    monkeypatch.setattr(sys, "executable", executable)
    dest = tmp_path / "ws" / "out"
    tree = stream(cache, stored, dest)
    offer_all(tree, cache, stored[1])
    rows, placed = tree.finish()

    assert snapshot(dest) == expected(TREE)
    assert rows == []
    assert sorted(p[0] for p in placed) == sorted(TREE)


def test_a_discarded_stream_stops_the_child_and_leaves_nothing(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    state = StateDB(tmp_path / "state.db")
    tree = stream(cache, stored, dest, state)
    offer_all(tree, cache, stored[1][:10])
    tree.discard()
    assert list(dest.parent.iterdir()) == []
    assert stored_rows(state) == []
    state.close()
