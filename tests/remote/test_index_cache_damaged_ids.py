"""The remote's index ids as last listed, read back from a damaged or foreign state db
(`.pivot/state.db` is untrusted like every file read from disk): anything but the list of
ids `RemoteIndexCache` stores counts as no listing, so the next look at the remote lists it
again and knows what it holds; never a crash."""

from __future__ import annotations

import sqlite3

import msgpack
import pytest
from remote_support import make_project, push_all

from pivot.cache.hashing import hash_bytes
from pivot.cache.state import StateDB
from pivot.remote import transfer
from pivot.remote.index_cache import IDS_KEY, RemoteIndexCache
from pivot.remote.stores import open_remote

DAMAGED = {
    "garbage": b"\xc1\x00",
    "trailing bytes": msgpack.packb(["a"]) + b"\x00",
    "a map": msgpack.packb({"a": 1}),
    "numbers": msgpack.packb([1, 2]),
    "text, not bytes": "[]",  # the column takes any type
    "a number": 7,
}


@pytest.mark.parametrize("what", list(DAMAGED))
def test_damaged_listed_ids_are_no_listing(tmp_path, what):
    remote = open_remote(str(tmp_path / "remote"), name="test")
    project = make_project(tmp_path / "p", {"one.txt": b"one\n"}, stage="p/one")
    push_all(project, remote)
    (ident,) = remote.list_indexes()
    assert transfer.remote_contents(project, remote).index_ids == {ident}

    state = StateDB(project.state_path)
    namespace = RemoteIndexCache(state, remote).namespace
    state.close()
    with sqlite3.connect(project.state_path) as db:
        db.execute(
            "UPDATE kv SET value = ? WHERE namespace = ? AND key = ?",
            (DAMAGED[what], namespace, IDS_KEY),
        )
    db.close()

    state = StateDB(project.state_path)
    try:
        index_cache = RemoteIndexCache(state, remote)
        assert index_cache.cached_ids() == []
        assert not index_cache.load().has_blob(hash_bytes(b"one\n"))  # nothing known
        if not isinstance(DAMAGED[what], bytes):
            assert state.get(namespace, IDS_KEY) is None
    finally:
        state.close()
    contents = transfer.remote_contents(project, remote)  # listed again, and right
    assert contents.index_ids == {ident} and contents.has_blob(hash_bytes(b"one\n"))


def test_items_of_other_types_are_left_out(tmp_path):
    state = StateDB(tmp_path / "state.db")
    try:
        state.put("n", "good", b"x")
        state.conn.execute("INSERT INTO kv VALUES ('n', 'text', 'a text value')")
        state.conn.execute("INSERT INTO kv VALUES ('n', 'number', 5)")
        state.conn.execute("INSERT INTO kv VALUES ('n', X'00', X'01')")  # a key of bytes
        assert state.items("n") == [("good", b"x")]
        assert state.get("n", "text") is None and state.get("n", "number") is None
        assert state.get("n", "good") == b"x"
    finally:
        state.close()
