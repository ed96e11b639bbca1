"""Push, fetch and pull on every backend in conftest.py: round trips, no-op pushes,
interruptions, damage on the remote and in the local cache, concurrent pushers."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from remote_support import clone, files_of, make_project, push_all, runs_on_remote

from pivot.cache import encoding
from pivot.cache.hashing import TreeEntry, encode_tree, hash_bytes
from pivot.cache.objects import LocalCache
from pivot.cache.runs import RunRecords, encode_record
from pivot.cache.state import StateDB
from pivot.errors import PivotError
from pivot.remote import identity, packs, transfer
from pivot.remote.index_cache import RemoteIndexCache
from pivot.remote.stores import INDEX, PACKS, Remote, open_remote
from pivot.run.lockfile import load_locks

FILES = {
    "data/a.txt": b"alpha\n" * 1000,
    "data/sub/b.bin": os.urandom(5000),
    "data/empty": b"",
    "model.bin": b"weights " * 10_000,
}
STORE_CALLS = ("names", "get", "get_file", "open_range", "put", "put_parts", "clean_uploads")


def small_files(n: int, tag: str = "") -> dict[str, bytes]:
    return {f"data/f{i:04d}.txt": f"{tag} row {i}\n".encode() * 50 for i in range(n)}


def count_requests(remote: Remote, monkeypatch) -> list[str]:
    """Every call made on the remote's object store from now on, by method name."""
    calls: list[str] = []
    for name in STORE_CALLS:
        original = getattr(remote.store, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(remote.store, name, counted)
    return calls


def flip_byte(remote: Remote, key: str, at: int, mask: int = 0x01) -> None:
    data = bytearray(remote.get_bytes(key))
    data[at] ^= mask
    remote.put_bytes(key, bytes(data))


@pytest.mark.every_backend
def test_round_trip_of_small_large_and_directory_outputs(tmp_path, remote):
    """Large outputs above transfer.LARGE in real sizes: a raw one (uploaded in 8 MiB
    parts, downloaded in ranged parts) and a compressible one (streamed through zstd)."""
    text = os.urandom(17 << 19).hex().encode()  # 17 MiB of text, ~9.4 MB compressed
    files = {
        **FILES,
        **small_files(30),
        "model/noise.bin": os.urandom(17 << 20),
        "model/text.bin": text,
    }
    src = make_project(tmp_path / "src", files)
    pushed = push_all(src, remote)
    assert (pushed.blobs, pushed.indexes, pushed.runs, pushed.packs) == (38, 1, 1, 3)
    assert pushed.missing == [] and pushed.bytes_sent < sum(map(len, files.values()))
    packed_text = packs.large_pack_id(hash_bytes(text), encoding.ZSTD)
    on_remote = set(remote.store.names(PACKS))
    assert {packed_text, hash_bytes(files["model/noise.bin"])} <= on_remote
    assert (8 << 20) < len(remote.get_bytes(Remote.pack_key(packed_text))) < len(text)
    dst = clone(src, tmp_path / "dst")
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert result.incomplete == [] and result.checked_out == ["data", "model", "model.bin"]
    assert result.summary.blobs == 38 and result.summary.missing == []
    assert files_of(dst.root) == files_of(src.root)


def test_run_records_travel(tmp_path, remote):
    src = make_project(tmp_path / "src", FILES)
    (lock,) = load_locks(src)
    push_all(src, remote)
    dst = clone(src, tmp_path / "dst")
    assert runs_on_remote(dst, remote, [lock.run_key, "f" * 64]) == {lock.run_key}
    summary = transfer.fetch_outputs(dst, remote, [], [lock.run_key, "f" * 64])
    assert summary.runs == 1 and summary.missing_runs == ["f" * 64] and summary.missing == []
    assert RunRecords(dst.cache_dir).get(lock.run_key) == lock.outs
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    assert all(not cache.missing(o["hash"], o["kind"]) for o in lock.outs.values())


def test_noop_push_makes_one_small_request(tmp_path, remote, monkeypatch):
    """Only the remote's identity object is read (one ranged get of a few dozen bytes; on
    S3 through the presigned URL the first push recorded, not the store)."""
    src = make_project(tmp_path / "src", FILES)
    push_all(src, remote)
    indexes = remote.list_indexes()
    calls = count_requests(remote, monkeypatch)
    again = push_all(src, remote)
    assert (again.blobs, again.indexes, again.bytes_sent, again.up_to_date) == (0, 0, 0, 5)
    assert calls == ([] if remote.url.startswith("s3://") else ["get"])
    # A second machine with an empty index cache learns the same from one listing.
    calls.clear()
    other = make_project(tmp_path / "other", FILES)
    assert push_all(other, remote).blobs == 0
    assert calls == ["get", "names", "get"] and remote.list_indexes() == indexes


def _empty(remote: Remote) -> None:
    """Delete every object Pivot stored, as a user emptying the bucket or folder would."""
    for pack in remote.store.names(PACKS):
        remote.delete(Remote.pack_key(pack))
    for ident in remote.store.names(INDEX):
        remote.delete(Remote.index_key(ident))
    remote.delete(identity.KEY)
    assert remote.store.names(PACKS) == remote.store.names(INDEX) == []


def test_a_push_after_the_remote_was_emptied_sends_everything(tmp_path, remote):
    """The cached indexes and the memo still say the remote holds it all; the identity
    object they were listed under is gone, so the push lists the remote and sends again."""
    src = make_project(tmp_path / "src", FILES)
    first = push_all(src, remote)
    assert push_all(src, remote).blobs == 0
    _empty(remote)
    again = push_all(src, remote)
    assert (again.blobs, again.up_to_date, again.missing) == (first.blobs, 0, [])
    assert push_all(src, remote).blobs == 0  # and the no-op is cheap again
    dst = clone(src, tmp_path / "dst")
    assert transfer.pull_locks(dst, remote, load_locks(dst)).incomplete == []
    assert files_of(dst.root) == files_of(src.root)


def test_a_push_to_a_replaced_remote_sends_everything(tmp_path, remote):
    """Emptied, then pushed to by another project: a new identity, which this machine did
    not list under."""
    src = make_project(tmp_path / "src", FILES)
    first = push_all(src, remote)
    _empty(remote)
    other = make_project(tmp_path / "other", small_files(3, "other"))
    push_all(other, remote)
    again = push_all(src, remote)
    assert (again.blobs, again.missing) == (first.blobs, [])
    dst = clone(src, tmp_path / "dst")
    assert transfer.pull_locks(dst, remote, load_locks(dst)).incomplete == []


@pytest.mark.parametrize(
    "bad", [b"", b"pivot remote id 1\n" + b"A" * 32 + b"\n", b"x" * 51, b"x" * 5000]
)
def test_a_damaged_identity_is_no_identity(tmp_path, remote, bad):
    """An identity object that does not decode voids the memo (full check), and the push
    writes a fresh one."""
    src = make_project(tmp_path / "src", FILES)
    push_all(src, remote)
    recorded = identity.read(remote)
    assert recorded is not None
    remote.put_bytes(identity.KEY, bad)
    assert identity.read(remote) is None
    _empty(remote)
    remote.put_bytes(identity.KEY, bad)
    assert push_all(src, remote).blobs > 0
    fresh = identity.read(remote)
    assert fresh is not None and fresh != recorded


@pytest.mark.every_backend
def test_interrupted_push_leaves_no_index_naming_a_missing_pack(tmp_path, remote, monkeypatch):
    first = make_project(tmp_path / "first", {"one.txt": b"first output\n"}, stage="p/one")
    push_all(first, remote)
    (first_index,) = remote.list_indexes()
    src = make_project(tmp_path / "src", FILES)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the packs, before the index")

    monkeypatch.setattr(transfer, "store_index", killed)
    with pytest.raises(KeyboardInterrupt):
        push_all(src, remote)
    monkeypatch.undo()
    assert remote.list_indexes() == [first_index]
    stored = set(remote.store.names(PACKS))
    index = packs.decode_index(remote.get_bytes(Remote.index_key(first_index)), "index")
    assert {p.pack_id for p in index.packs} < stored  # plus the interrupted push's packs

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


@pytest.mark.every_backend
@pytest.mark.parametrize("kind", ["small", "large", "raw"])
def test_damaged_pack_is_detected_and_named(tmp_path, monkeypatch, remote, kind):
    if kind == "large":
        monkeypatch.setattr(transfer, "LARGE", 1000)
    files = {
        "small": small_files(20),
        "large": {"out.txt": b"pivot data " * 3000},
        "raw": {"noise.bin": os.urandom(20000)},  # stored raw: the flip reaches a blob
    }[kind]
    src = make_project(tmp_path / "src", files)
    push_all(src, remote)
    (pack_id,) = remote.store.names(PACKS)
    size = len(remote.get_bytes(Remote.pack_key(pack_id)))
    flip_byte(remote, Remote.pack_key(pack_id), 7 if kind == "raw" else size // 2)
    dst = clone(src, tmp_path / "dst")
    with pytest.raises(PivotError) as info:
        transfer.fetch_locks(dst, remote, load_locks(dst))
    message = str(info.value)
    assert pack_id in message and "Remote 'test'" in message and "The pack is damaged" in message
    if kind == "raw":
        assert "does not match its BLAKE3 hash" in message
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    for rel, content in files.items():
        if cache.has(hash_bytes(content)):  # what entered the cache is intact
            assert cache.read_bytes(hash_bytes(content)) == content, rel
    assert not [p for p in dst.tmp_dir.iterdir() if p.name.startswith("blob.")]


@pytest.mark.parametrize("compressible", [True, False])
def test_damaged_large_cache_object_is_not_pushed(tmp_path, monkeypatch, remote, compressible):
    """The damage shows only after the last part is read: the upload is abandoned, and
    no pack, index or unfinished upload is left."""
    monkeypatch.setattr(transfer, "LARGE", 10_000)
    monkeypatch.setattr(transfer, "PART", 4096)  # several parts (never completed)
    text = os.urandom(20_000).hex().encode() if compressible else os.urandom(40_000)
    src = make_project(tmp_path / "src", {"text.txt": text})
    obj = LocalCache(src.cache_dir, src.tmp_dir).path(hash_bytes(text))
    obj.chmod(0o644)
    obj.write_bytes(text[:-1] + bytes([text[-1] ^ 1]))  # the last byte changed, always
    with pytest.raises(PivotError, match="does not match its hash") as info:
        push_all(src, remote)
    assert hash_bytes(text) in str(info.value)
    assert not obj.exists() and (src.cache_dir / "quarantine" / hash_bytes(text)).is_file()
    assert remote.store.names(PACKS) == [] and remote.store.names(INDEX) == []
    assert remote.clean_uploads(0) == 0


def test_damaged_index_is_reported(tmp_path, remote):
    src = make_project(tmp_path / "src", {"x": b"x"})
    push_all(src, remote)
    (index,) = remote.list_indexes()
    key = Remote.index_key(index)
    remote.put_bytes(key, remote.get_bytes(key) + b"\x00")
    dst = clone(src, tmp_path / "dst")
    with pytest.raises(PivotError, match="does not match its name"):
        transfer.fetch_locks(dst, remote, load_locks(dst))


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


@pytest.mark.every_backend
def test_concurrent_pushes_of_overlapping_data(tmp_path, remote):
    shared = small_files(60, "shared")
    projects = [
        make_project(tmp_path / f"p{i}", {**shared, f"data/own{i}": f"{i}".encode() * 99}, f"p/{i}")
        for i in range(3)
    ]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(projects))

    def run(project):
        try:
            barrier.wait()
            push_all(project, remote, jobs=4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in projects]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for src in projects:
        dst = clone(src, tmp_path / f"dst-{src.root.name}")
        result = transfer.pull_locks(dst, remote, load_locks(dst))
        assert result.incomplete == [] and result.summary.missing == []
        assert files_of(dst.root) == files_of(src.root)


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
    # Everything is listed in the cached indexes now: the next push asks the remote only
    # for its identity.
    calls = count_requests(mirror, monkeypatch)
    again = transfer.push_locks(dst, mirror, load_locks(dst))
    assert again.blobs == 0 and again.runs == 0 and again.up_to_date == 5
    assert calls == ["get"]


def test_run_record_not_pushed_without_its_blobs(tmp_path, remote):
    src = make_project(tmp_path / "src", {"x.txt": b"x"})
    (lock,) = load_locks(src)
    LocalCache(src.cache_dir, src.tmp_dir).path(lock.outs["x.txt"]["hash"]).unlink()
    summary = push_all(src, remote)
    assert summary.runs == 0 and summary.missing_runs == [lock.run_key]
    assert summary.missing == [lock.outs["x.txt"]["hash"]]


def test_damaged_local_run_record_reads_as_absent_and_push_uses_the_lock(tmp_path, remote):
    src = make_project(tmp_path / "src", FILES)
    (lock,) = load_locks(src)
    runs = RunRecords(src.cache_dir)
    runs.path(lock.run_key).write_bytes(b"")  # damaged (a disk error, a stray tool)
    assert runs.get(lock.run_key) is None and runs.get_bytes(lock.run_key) is None
    summary = push_all(src, remote)
    assert summary.runs == 1 and summary.missing_runs == []
    assert runs_on_remote(src, remote, [lock.run_key]) == {lock.run_key}


def test_pull_teaches_the_stat_cache_every_file_it_places(tmp_path, remote):
    """After a pull, the state db holds each pulled file's stat and hash, so the next
    `status` or `run` reads none of them again (the same placement as run and checkout)."""
    files = {**FILES, "big.bin": b"large output\n" * (transfer.LARGE // 13 + 1)}
    assert len(files["big.bin"]) > transfer.LARGE  # streamed and checked out on its own
    src = make_project(tmp_path / "src", files)
    push_all(src, remote)
    dst = clone(src, tmp_path / "dst")
    assert transfer.pull_locks(dst, remote, load_locks(dst)).incomplete == []
    state = StateDB(dst.state_path)
    try:
        for rel, data in files_of(dst.root).items():
            assert state.lookup(rel, (dst.root / rel).stat()) == hash_bytes(data), rel
    finally:
        state.close()


def test_missing_blobs_are_listed(tmp_path, remote):
    src = make_project(tmp_path / "src", FILES)
    dst = clone(src, tmp_path / "dst")
    summary = transfer.fetch_locks(dst, remote, load_locks(dst))
    assert summary.blobs == 0 and len(summary.missing) == 2
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert sorted(result.incomplete) == ["data", "model.bin"]


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
    record = encode_record({"../escape": {"hash": "a" * 64, "size": 1, "kind": "file"}})
    _store_raw(remote, tmp_path, {hash_bytes(b"x"): b"x"}, [("b" * 64, record)])
    dst = clone(make_project(tmp_path / "src", {"x": b"x"}), tmp_path / "dst")
    with pytest.raises(PivotError, match="Refusing"):
        transfer.fetch_outputs(dst, remote, [], ["b" * 64])
