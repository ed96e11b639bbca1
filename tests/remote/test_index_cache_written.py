"""The ids of the indexes a process writes (`RemoteIndexCache.remember`): kept apart from
the listed ids, so writing one index costs the same however many the remote holds (a Dask
worker writes one per task), yet known at once and forgotten once the remote drops it."""

from __future__ import annotations

import pathlib

import msgpack
from remote_support import make_project, push_all
from support import PivotCLI

from pivot.cache.hashing import hash_bytes
from pivot.cache.state import StateDB
from pivot.remote import transfer
from pivot.remote.index_cache import IDS_KEY, RemoteIndexCache
from pivot.remote.stores import Remote, open_remote


def _listed(state: StateDB, index_cache: RemoteIndexCache) -> list[str]:
    raw = state.get(index_cache.namespace, IDS_KEY)
    return list(msgpack.unpackb(raw)) if raw else []


def test_an_index_written_is_known_without_rewriting_the_listed_ids(tmp_path):
    remote = open_remote(str(tmp_path / "remote"), name="test")
    first = make_project(tmp_path / "first", {"one.txt": b"first output\n"}, stage="p/one")
    second = make_project(tmp_path / "second", {"two.txt": b"second output\n"}, stage="p/two")
    push_all(second, remote)
    (theirs,) = remote.list_indexes()
    assert transfer.remote_contents(first, remote).index_ids == {theirs}  # listed
    push_all(first, remote)
    (mine,) = set(remote.list_indexes()) - {theirs}

    state = StateDB(first.state_path)
    try:
        index_cache = RemoteIndexCache(state, remote)
        assert _listed(state, index_cache) == [theirs]  # not rewritten for the new index
        assert index_cache.cached_ids() == sorted([theirs, mine])
        assert index_cache.load().has_blob(hash_bytes(b"first output\n"))
    finally:
        state.close()

    # The remote drops it (by hand here; a remote gc merges indexes away): the next
    # listing forgets it, and what is left of the written ids is folded into the listing.
    (tmp_path / "remote" / Remote.index_key(mine)).unlink()
    assert transfer.remote_contents(first, remote).index_ids == {theirs}
    state = StateDB(first.state_path)
    try:
        index_cache = RemoteIndexCache(state, remote)
        assert index_cache.cached_ids() == [theirs]
        assert state.items(index_cache.written) == []
        assert not index_cache.load().has_blob(hash_bytes(b"first output\n"))
    finally:
        state.close()


class _PushDuringListing(Remote):
    """A remote whose listing is followed, before `refresh` goes on, by a `pivot push` of
    another process into the same project: the race between a listing and its recording."""

    project_root: pathlib.Path

    def list_indexes(self) -> list[str]:
        listed = super().list_indexes()
        PivotCLI(self.project_root)("push", "--all")
        return listed


def test_an_index_another_process_writes_during_a_listing_is_kept(tmp_path):
    store = tmp_path / "remote"
    first = make_project(tmp_path / "first", {"one.txt": b"first output\n"}, stage="p/one")
    second = make_project(tmp_path / "second", {"two.txt": b"second output\n"}, stage="p/two")
    push_all(second, open_remote(str(store), name="test"))
    (theirs,) = open_remote(str(store), name="test").list_indexes()
    PivotCLI(first.root)("remote", "add", "origin", str(store), "--default")

    state = StateDB(first.state_path)
    try:
        racing = _PushDuringListing(**vars(open_remote(str(store), name="test")))
        racing.project_root = first.root
        index_cache = RemoteIndexCache(state, racing)
        assert index_cache.refresh().index_ids == {theirs}  # listed before the push
    finally:
        state.close()
    (mine,) = set(open_remote(str(store), name="test").list_indexes()) - {theirs}

    # The index the other process wrote meanwhile is still known, and still cached: no
    # listing is needed to see that the remote holds the first project's output.
    state = StateDB(first.state_path)
    try:
        index_cache = RemoteIndexCache(state, open_remote(str(store), name="test"))
        assert index_cache.cached_ids() == sorted([theirs, mine])
        assert index_cache.load().has_blob(hash_bytes(b"first output\n"))
    finally:
        state.close()
    assert "0 blobs" in PivotCLI(first.root)("push", "--all").stdout
