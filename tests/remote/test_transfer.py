"""Push, fetch, pull and gc against local-directory and memory:// remotes."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from remote_support import clone, files_of, make_project, runs_on_remote

from pivot.cache import encoding
from pivot.cache.gc import collect_garbage
from pivot.cache.hashing import TreeEntry, encode_tree, hash_bytes
from pivot.cache.runs import RunRecords
from pivot.cache.state import StateDB
from pivot.cache.store import LocalCache
from pivot.errors import PivotError
from pivot.project import Project
from pivot.remote import packs, transfer
from pivot.remote.index_cache import RemoteIndexCache
from pivot.remote.stores import Remote, open_remote
from pivot.run.lockfile import live, load_locks

FILES = {
    "data/a.txt": b"alpha\n" * 1000,
    "data/sub/b.bin": os.urandom(5000),
    "data/empty": b"",
    "model.bin": b"weights " * 10_000,
}


@pytest.fixture(params=["local", "memory"])
def remote(request, tmp_path) -> Remote:
    if request.param == "local":
        return open_remote(str(tmp_path / "remote"), name="test")
    return open_remote(f"memory://pivot-test-{uuid.uuid4().hex}", name="test")


def push_all(project: Project, remote: Remote, **kw) -> transfer.TransferSummary:
    return transfer.push_locks(
        project, remote, load_locks(project), RunRecords(project.cache_dir).keys(), **kw
    )


def test_push_then_pull_into_empty_project(tmp_path, remote):
    src = make_project(tmp_path / "src", FILES)
    summary = push_all(src, remote)
    assert summary.blobs == 5 and summary.indexes == 1 and summary.runs == 1
    assert summary.bytes_sent < sum(len(v) for v in FILES.values())  # compression paid
    dst = clone(src, tmp_path / "dst")
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert result.incomplete == [] and sorted(result.checked_out) == ["data", "model.bin"]
    assert result.summary.blobs == 5 and result.summary.missing == []
    assert files_of(dst.root) == files_of(src.root)


def test_noop_push_sends_nothing(tmp_path, remote, monkeypatch):
    src = make_project(tmp_path / "src", FILES)
    push_all(src, remote)
    writes = []
    original = Remote.put_bytes
    monkeypatch.setattr(
        Remote, "put_bytes", lambda self, key, data: (writes.append(key), original(self, key, data))
    )
    again = push_all(src, remote)
    assert again.blobs == 0 and again.indexes == 0 and again.bytes_sent == 0
    assert again.up_to_date == 5 and writes == []
    # A second machine with an empty index cache learns the same from one listing.
    other = make_project(tmp_path / "other", FILES)
    assert push_all(other, remote).blobs == 0 and writes == []


def test_interrupted_push_is_consistent_and_repush_completes(tmp_path, remote, monkeypatch):
    first = make_project(tmp_path / "first", {"one.txt": b"first output\n"}, stage="p/one")
    push_all(first, remote)
    src = make_project(tmp_path / "src", FILES)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between packs and index")

    monkeypatch.setattr(transfer, "store_index", crash)
    with pytest.raises(KeyboardInterrupt):
        push_all(src, remote)
    monkeypatch.undo()
    assert len(remote.list_indexes()) == 1  # only the first push's index
    assert remote.list_packs()  # the interrupted push left unreferenced packs

    dst = clone(first, tmp_path / "dst")
    fetched = transfer.fetch_locks(dst, remote, load_locks(dst))
    assert fetched.blobs == 1 and fetched.missing == []
    dst2 = clone(src, tmp_path / "dst2")
    unindexed = transfer.fetch_locks(dst2, remote, load_locks(dst2))
    assert unindexed.blobs == 0 and len(unindexed.missing) == 2  # data manifest, model.bin

    again = push_all(src, remote)
    assert again.blobs == 5 and again.indexes == 1
    result = transfer.pull_locks(dst2, remote, load_locks(dst2))
    assert result.incomplete == []
    assert files_of(dst2.root) == files_of(src.root)


@pytest.mark.parametrize("large", [False, True])
def test_flipped_byte_in_pack_is_detected(tmp_path, monkeypatch, large):
    if large:
        monkeypatch.setattr(transfer, "LARGE", 1000)
    remote = open_remote(str(tmp_path / "remote"), name="test")
    data = b"pivot data " * 3000
    src = make_project(tmp_path / "src", {"out.txt": data})
    push_all(src, remote)
    (pack,) = (tmp_path / "remote" / "packs").glob("*/*")
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pack.write_bytes(bytes(raw))
    dst = clone(src, tmp_path / "dst")
    with pytest.raises(PivotError) as info:
        transfer.fetch_locks(dst, remote, load_locks(dst))
    assert pack.name in str(info.value) and "'test'" in str(info.value)
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    assert not cache.has(hash_bytes(data))
    assert not list(cache.objects.rglob("*")) or all(p.is_dir() for p in cache.objects.rglob("*"))
    assert not [p for p in dst.tmp_dir.iterdir() if p.name.startswith("blob.")]


def test_raw_flip_detected_for_random_data(tmp_path):
    remote = open_remote(str(tmp_path / "remote"), name="test")
    src = make_project(tmp_path / "src", {"noise.bin": os.urandom(20000)})
    push_all(src, remote)
    (pack,) = (tmp_path / "remote" / "packs").glob("*/*")
    raw = bytearray(pack.read_bytes())
    raw[7] ^= 0xFF
    pack.write_bytes(bytes(raw))
    dst = clone(src, tmp_path / "dst")
    with pytest.raises(PivotError, match="does not match its BLAKE3"):
        transfer.fetch_locks(dst, remote, load_locks(dst))


def test_large_blobs_stream_in_own_packs(tmp_path, monkeypatch, remote):
    monkeypatch.setattr(transfer, "LARGE", 10_000)
    monkeypatch.setattr(transfer, "PART", 4096)  # the compressed text goes in several parts
    text = os.urandom(20_000).hex().encode()
    files = {"big/text.txt": text, "big/noise.bin": os.urandom(50_000)}
    src = make_project(tmp_path / "src", files)
    summary = push_all(src, remote)
    assert summary.packs == 3  # two large blobs alone, one pack for the manifest
    packed_text = packs.large_pack_id(hash_bytes(text), encoding.ZSTD)
    on_remote = set(remote.list_packs())
    assert {packed_text, hash_bytes(files["big/noise.bin"])} <= on_remote
    assert 4096 * 2 < len(remote.get_bytes(Remote.pack_key(packed_text))) < len(text)
    dst = clone(src, tmp_path / "dst")
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert result.incomplete == []
    assert files_of(dst.root) == files_of(src.root)


def test_large_outputs_with_the_same_content_are_downloaded_once(tmp_path, monkeypatch, remote):
    monkeypatch.setattr(transfer, "LARGE", 10_000)
    same = os.urandom(30_000).hex().encode()
    files = {"a.bin": same, "b.bin": same, "c.bin": os.urandom(20_000)}
    src = make_project(tmp_path / "src", files)
    push_all(src, remote)
    dst = clone(src, tmp_path / "dst")
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert result.checked_out == ["a.bin", "b.bin", "c.bin"] and result.incomplete == []
    assert result.summary.blobs == 2
    assert files_of(dst.root) == files
    assert (dst.root / "a.bin").stat().st_ino != (dst.root / "b.bin").stat().st_ino


@pytest.mark.parametrize("compressible", [True, False])
def test_damaged_large_cache_object_is_not_pushed(tmp_path, monkeypatch, compressible):
    """The damage shows only after the last part is read: no pack, no index."""
    monkeypatch.setattr(transfer, "LARGE", 10_000)
    monkeypatch.setattr(transfer, "PART", 4096)
    remote = open_remote(str(tmp_path / "remote"), name="test")
    text = os.urandom(20_000).hex().encode() if compressible else os.urandom(40_000)
    src = make_project(tmp_path / "src", {"text.txt": text})
    cache = LocalCache(src.cache_dir, src.tmp_dir)
    obj = cache.path(hash_bytes(text))
    obj.chmod(0o644)
    obj.write_bytes(text[:-1] + b"!")
    with pytest.raises(PivotError, match="does not match its hash") as info:
        push_all(src, remote)
    assert hash_bytes(text) in str(info.value)
    assert not obj.exists() and (src.cache_dir / "quarantine" / hash_bytes(text)).is_file()
    assert [p for p in (tmp_path / "remote").rglob("*") if p.is_file()] == []


def test_concurrent_pushes_of_overlapping_data(tmp_path, remote):
    shared = {f"data/shared{i}.txt": f"shared {i}\n".encode() * 200 for i in range(50)}
    one = make_project(tmp_path / "one", {**shared, "data/only1.txt": b"one"}, stage="p/a")
    two = make_project(tmp_path / "two", {**shared, "data/only2.txt": b"two"}, stage="p/b")
    errors = []
    barrier = threading.Barrier(2)

    def run(project):
        try:
            barrier.wait()
            push_all(project, remote, jobs=4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for src in (one, two):
        dst = clone(src, tmp_path / f"dst-{src.root.name}")
        result = transfer.pull_locks(dst, remote, load_locks(dst))
        assert result.incomplete == [] and result.summary.missing == []
        assert files_of(dst.root) == files_of(src.root)


def test_run_records_travel(tmp_path, remote):
    src = make_project(tmp_path / "src", FILES)
    (lock,) = load_locks(src)
    push_all(src, remote)
    dst = clone(src, tmp_path / "dst")
    assert runs_on_remote(dst, remote, [lock.run_key, "f" * 64]) == {lock.run_key}
    summary = transfer.fetch_outputs(dst, remote, [], [lock.run_key, "f" * 64])
    assert summary.runs == 1 and summary.missing_runs == ["f" * 64]
    assert RunRecords(dst.cache_dir).get(lock.run_key) == lock.outs
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    assert all(not cache.missing(o["hash"], o["kind"]) for o in lock.outs.values())


def test_pulled_clone_pushes_run_records_from_its_locks(tmp_path, remote, monkeypatch):
    src = make_project(tmp_path / "src", FILES)
    (lock,) = load_locks(src)
    push_all(src, remote)
    dst = clone(src, tmp_path / "dst")
    transfer.pull_locks(dst, remote, load_locks(dst))
    assert not RunRecords(dst.cache_dir).has(lock.run_key)  # a pull brings no records
    mirror = open_remote(str(tmp_path / "mirror"), name="mirror")
    summary = transfer.push_locks(dst, mirror, load_locks(dst))
    assert summary.runs == 1 and summary.missing_runs == []
    assert runs_on_remote(dst, mirror, [lock.run_key]) == {lock.run_key}
    # Everything is listed in the cached indexes now: the next push asks the remote nothing.
    monkeypatch.setattr(Remote, "list_indexes", lambda self: pytest.fail("listed the remote"))
    again = transfer.push_locks(dst, mirror, load_locks(dst))
    assert again.blobs == 0 and again.runs == 0 and again.up_to_date == 5


def test_run_record_not_pushed_without_its_blobs(tmp_path, remote):
    src = make_project(tmp_path / "src", {"x.txt": b"x"})
    (lock,) = load_locks(src)
    LocalCache(src.cache_dir, src.tmp_dir).path(lock.outs["x.txt"]["hash"]).unlink()
    summary = push_all(src, remote)
    assert summary.runs == 0 and summary.missing_runs == [lock.run_key]
    assert summary.missing == [lock.outs["x.txt"]["hash"]]


def _store_raw(remote: Remote, tmp_path, blobs: dict[str, bytes], runs=()) -> None:
    """Write a pack and index by hand (as a hostile or buggy pusher could)."""
    builder = packs.PackBuilder()
    for digest, data in blobs.items():
        builder.add(digest, data)
    data, info = builder.finish()
    remote.put_bytes(Remote.pack_key(info.pack_id), data)
    state = StateDB(tmp_path / f"state-{uuid.uuid4().hex}.db")
    transfer.store_index(remote, RemoteIndexCache(state, remote), [info], list(runs))
    state.close()


@pytest.mark.parametrize("bad", ["../outside.txt", "/etc/passwd"])
def test_tree_manifest_with_unsafe_path_is_rejected(tmp_path, remote, bad):
    payload = b"evil"
    manifest = encode_tree([TreeEntry(bad, hash_bytes(payload), 4, 0o644)])
    digest = hash_bytes(manifest)
    _store_raw(remote, tmp_path, {digest: manifest, hash_bytes(payload): payload})
    dst = clone(make_project(tmp_path / "src", {"x": b"x"}), tmp_path / "dst")
    with pytest.raises(PivotError, match="Refusing"):
        transfer.fetch_outputs(dst, remote, [(digest, "dir")])
    assert not (tmp_path / "outside.txt").exists()


def test_index_run_record_with_unsafe_path_is_rejected(tmp_path, remote):
    from pivot.cache.runs import encode_record

    record = encode_record({"../escape": {"hash": "a" * 64, "size": 1, "kind": "file"}})
    _store_raw(remote, tmp_path, {hash_bytes(b"x"): b"x"}, [("b" * 64, record)])
    dst = clone(make_project(tmp_path / "src", {"x": b"x"}), tmp_path / "dst")
    with pytest.raises(PivotError, match="Refusing"):
        transfer.fetch_outputs(dst, remote, [], ["b" * 64])


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


def test_damaged_index_is_reported(tmp_path):
    remote = open_remote(str(tmp_path / "remote"), name="test")
    src = make_project(tmp_path / "src", {"x": b"x"})
    push_all(src, remote)
    (index,) = (tmp_path / "remote" / "index").iterdir()
    index.write_bytes(index.read_bytes() + b"\x00")
    dst = clone(src, tmp_path / "dst")
    with pytest.raises(PivotError, match="does not match its name"):
        transfer.fetch_locks(dst, remote, load_locks(dst))


def test_missing_blobs_are_listed(tmp_path, remote):
    src = make_project(tmp_path / "src", FILES)
    dst = clone(src, tmp_path / "dst")
    summary = transfer.fetch_locks(dst, remote, load_locks(dst))
    assert summary.blobs == 0 and len(summary.missing) == 2
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert sorted(result.incomplete) == ["data", "model.bin"]


def test_gc_keeps_referenced_and_removes_the_rest(tmp_path):
    project = make_project(tmp_path / "p", FILES)
    cache = LocalCache(project.cache_dir, project.tmp_dir)
    runs = RunRecords(project.cache_dir)
    orphan = cache.add_bytes(b"orphan blob")
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


def test_damaged_local_run_record_reads_as_absent_and_push_uses_the_lock(tmp_path, remote):
    src = make_project(tmp_path / "src", FILES)
    (lock,) = load_locks(src)
    runs = RunRecords(src.cache_dir)
    runs.path(lock.run_key).write_bytes(b"")  # damaged (a disk error, a stray tool)
    assert runs.get(lock.run_key) is None and runs.get_bytes(lock.run_key) is None
    summary = push_all(src, remote)
    assert summary.runs == 1 and summary.missing_runs == []
    assert runs_on_remote(src, remote, [lock.run_key]) == {lock.run_key}
