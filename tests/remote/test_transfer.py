"""Transfers that need a backend's own files (the conformance suite in conformance/ runs
push, fetch and pull on every backend), and local garbage collection."""

from __future__ import annotations

import os

from remote_support import clone, make_project, push_all
from support import add_blob

from pivot.cache.gc import collect_garbage
from pivot.cache.hashing import hash_bytes
from pivot.cache.objects import LocalCache
from pivot.cache.runs import RunRecords
from pivot.cache.state import StateDB
from pivot.remote import transfer
from pivot.remote.index_cache import RemoteIndexCache
from pivot.remote.stores import Remote, open_remote
from pivot.run.lockfile import live, load_locks

FILES = {
    "data/a.txt": b"alpha\n" * 1000,
    "data/sub/b.bin": os.urandom(5000),
    "data/empty": b"",
    "model.bin": b"weights " * 10_000,
}


def test_indexes_deleted_from_the_remote_are_dropped_locally(tmp_path):
    remote = open_remote(str(tmp_path / "remote"), name="test")
    first = make_project(tmp_path / "first", {"one.txt": b"first output\n"}, stage="p/one")
    push_all(first, remote)
    (kept,) = remote.list_indexes()
    second = make_project(tmp_path / "second", {"two.txt": b"second output\n"}, stage="p/two")
    push_all(second, remote)
    (gone,) = set(remote.list_indexes()) - {kept}
    dst = clone(first, tmp_path / "dst")
    assert transfer.remote_contents(dst, remote).index_ids == {kept, gone}
    (tmp_path / "remote" / Remote.index_key(gone)).unlink()

    contents = transfer.remote_contents(dst, remote)
    assert contents.index_ids == {kept}
    assert not contents.has_blob(hash_bytes(b"second output\n"))
    assert contents.has_blob(hash_bytes(b"first output\n"))
    state = StateDB(dst.state_path)
    try:
        index_cache = RemoteIndexCache(state, remote)
        assert [k for k, _ in state.items(index_cache.namespace) if k != "@ids"] == [kept]
        assert index_cache.cached_ids() == [kept]
        assert index_cache.load().index_ids == {kept}
    finally:
        state.close()


def test_gc_keeps_referenced_and_removes_the_rest(tmp_path):
    project = make_project(tmp_path / "p", FILES)
    cache = LocalCache(project.cache_dir, project.tmp_dir)
    runs = RunRecords(project.cache_dir)
    orphan = add_blob(cache, b"orphan blob")
    runs.put("c" * 64, {"gone.txt": {"hash": orphan, "size": 11, "kind": "file"}})
    dry = collect_garbage(project, *live(load_locks(project)), dry_run=True)
    assert (dry.objects_removed, dry.runs_removed) == (1, 1) and cache.has(orphan)
    done = collect_garbage(project, *live(load_locks(project)))
    assert (done.objects_removed, done.runs_removed, done.objects_kept) == (1, 1, 5)
    assert not cache.has(orphan) and not runs.has("c" * 64)
    (lock,) = load_locks(project)
    assert runs.has(lock.run_key)
    for out in lock.outs.values():
        assert cache.missing(out["hash"], out["kind"]) == []
