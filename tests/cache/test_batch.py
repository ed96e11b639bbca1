"""Durable cache batches on real files: flushed before any rename, never a partial blob."""

from __future__ import annotations

import os
import pathlib
import stat
import tempfile
import threading

import pytest
from cache_support import (
    leftovers,
    objects,
)

from pivot import _fs
from pivot.cache import batch as batch_mod
from pivot.cache.hashing import hash_bytes
from pivot.errors import PivotError


def test_batch_publishes_only_at_commit(cache):
    blobs = [f"blob {i}".encode() for i in range(100)]
    batch = cache.batch()
    for data in blobs:
        batch.put_bytes(data)
    batch.put_bytes(blobs[0])  # staged twice: stored once
    assert not any(cache.has(hash_bytes(d)) for d in blobs)
    assert batch.commit() == len(blobs)
    assert all(cache.read_bytes(hash_bytes(d)) == d for d in blobs)
    assert leftovers(cache.tmp_dir) == []


@pytest.mark.parametrize("count", [3, 100])
def test_batch_is_flushed_before_any_rename(cache, monkeypatch, count):
    """A small batch fsyncs its files, a large one flushes the filesystem, always first;
    then the renames, then the folders renamed into are synced (each once) or, for a
    large batch, the filesystem flushed again."""
    events = []
    real_replace = os.replace
    real_sync_folder = _fs._sync_folder
    monkeypatch.setattr(batch_mod, "_syncfs", lambda folder: events.append("syncfs"))
    monkeypatch.setattr(batch_mod, "_fsync_path", lambda path: events.append("fsync"))
    monkeypatch.setattr(
        batch_mod.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))
    )
    monkeypatch.setattr(
        _fs, "_sync_folder", lambda f: (events.append(f"dir {f}"), real_sync_folder(f))
    )
    digests = []
    with cache.batch() as batch:
        for i in range(count):
            digests.append(batch.put_bytes(f"blob {i}".encode()))
    large = count >= batch_mod.SYNCFS_MIN
    flushes = ["syncfs"] if large else ["fsync"] * count
    assert events[: len(flushes) + count] == [*flushes, *["rename"] * count]
    after = events[len(flushes) + count :]
    if large:
        assert after == ["syncfs"]
    else:
        shards = {f"dir {cache.objects / d[:2]}" for d in digests}
        assert shards <= set(after) and len(after) == len(set(after))


def test_interrupted_batch_leaves_nothing(cache):
    with pytest.raises(KeyboardInterrupt), cache.batch() as batch:
        batch.put_bytes(b"one")
        batch.put_bytes(b"two")
        raise KeyboardInterrupt
    assert not cache.has(hash_bytes(b"one")) and objects(cache) == []
    assert leftovers(cache.tmp_dir) == []


def test_failed_batch_keeps_what_was_staged(cache):
    with pytest.raises(ValueError), cache.batch() as batch:
        batch.put_bytes(b"verified")
        raise ValueError("a later blob was damaged")
    assert cache.read_bytes(hash_bytes(b"verified")) == b"verified"


def test_commit_failing_midway_exposes_no_partial_blob(cache, monkeypatch):
    real_replace = os.replace
    calls = []

    def flaky(a, b):
        calls.append(b)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed during the rename pass")
        real_replace(a, b)

    monkeypatch.setattr(batch_mod.os, "replace", flaky)
    blobs = [f"blob {i}".encode() * 100 for i in range(10)]
    with pytest.raises(KeyboardInterrupt), cache.batch() as batch:
        for data in blobs:
            batch.put_bytes(data)
        batch.commit()
    present = objects(cache)
    assert len(present) == 2
    for path in present:
        assert hash_bytes(path.read_bytes()) == path.parent.name + path.name
    assert leftovers(cache.tmp_dir) == []


def test_readers_never_see_a_partial_blob(cache):
    """Watch the store while a large batch is written: every visible blob is whole."""
    blobs = [os.urandom(20_000) for _ in range(300)]
    done = threading.Event()
    seen: dict[str, bool] = {}

    def watch():
        while not done.is_set():
            for path in objects(cache):
                digest = path.parent.name + path.name
                seen[digest] = hash_bytes(path.read_bytes()) == digest

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with cache.batch() as batch:
            for data in blobs:
                batch.put_bytes(data)
    finally:
        done.set()
        watcher.join()
    assert all(seen.values())
    assert len(objects(cache)) == len(blobs)


def test_batch_adopts_streamed_files_and_refuses_bad_hashes(cache):
    with cache.batch() as batch:
        tmp = batch.temp_path()
        tmp.write_bytes(b"streamed")
        batch.adopt(tmp, hash_bytes(b"streamed"))
        again = batch.temp_path()
        again.write_bytes(b"streamed")
        batch.adopt(again, hash_bytes(b"streamed"))  # already staged: dropped
        assert not again.exists()
        with pytest.raises(PivotError, match="invalid hash"):
            batch.put_bytes(b"x", "../../etc/passwd")
    path = cache.path(hash_bytes(b"streamed"))
    assert path.read_bytes() == b"streamed" and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert leftovers(cache.tmp_dir) == []


def test_threads_write_into_folders_of_their_own(cache):
    barrier = threading.Barrier(3)
    with cache.batch() as batch:

        def put(k: int) -> None:
            barrier.wait()
            for i in range(20):
                batch.put_bytes(f"blob {k} {i}".encode())

        threads = [threading.Thread(target=put, args=(k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({os.path.dirname(tmp) for tmp in batch._staged.values()}) == 3
    assert len(objects(cache)) == 60 and leftovers(cache.tmp_dir) == []


def test_concurrent_puts_from_many_threads(cache):
    blobs = [f"blob {i}".encode() for i in range(400)]
    with cache.batch() as batch:
        threads = [
            threading.Thread(target=lambda k=k: [batch.put_bytes(d) for d in blobs[k::4]])
            for k in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(cache.read_bytes(hash_bytes(d)) == d for d in blobs)


# ----------------------------------------------------------------------------- checkout


def test_a_large_batch_flushes_each_filesystem_of_the_files_it_makes_durable(
    cache, monkeypatch, tmp_path
):
    """A large batch whose `sync_also` files (lock temps beside the workspace) lie on
    another filesystem than the cache (a linked cache) flushes both, once each, before
    any rename; a tmpfs (`/dev/shm`) is that other filesystem here."""
    assert os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev, "needs /dev/shm as tmpfs"
    synced = []
    monkeypatch.setattr(batch_mod, "_syncfs", lambda folder: synced.append(os.stat(folder)))
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        locks = [os.path.join(elsewhere, f".s{i}.lock.tmp") for i in range(3)]
        for path in locks:
            pathlib.Path(path).write_text("{}")
        near = tmp_path / ".near.lock.tmp"
        near.write_text("{}")
        batch = cache.batch()
        for i in range(batch_mod.SYNCFS_MIN):
            batch.put_bytes(f"blob {i}".encode())
        assert batch.commit(sync_also=[*locks, str(near)]) == batch_mod.SYNCFS_MIN
    devices = [st.st_dev for st in synced]
    cache_dev, shm_dev = os.stat(cache.tmp_dir).st_dev, os.stat("/dev/shm").st_dev
    assert devices[:2] == [cache_dev, shm_dev]  # before the renames, each once
    assert devices[2:] == [cache_dev]  # after them, the cache's again


def test_write_new_writes_many_parts_in_order(tmp_path):
    """A pack's blobs, more than one `writev` takes, some empty and some views, land in
    order and whole."""
    parts: list[bytes | memoryview] = []
    for i in range(2 * _fs.WRITEV_PARTS + 7):
        data = f"blob {i}\n".encode() * (i % 5)
        parts.append(memoryview(data) if i % 3 else data)
    path = tmp_path / "pack"
    st = _fs.write_new(str(path), parts, 0o444)
    want = b"".join(bytes(p) for p in parts)
    assert path.read_bytes() == want
    assert st.st_size == len(want)


def test_an_abandoned_pack_leaves_nothing_and_its_blobs_can_be_stored_again(cache):
    blobs = [(hash_bytes(data), data) for data in (f"blob {i}\n".encode() for i in range(50))]
    with cache.batch() as batch:
        writer = batch_mod.PackWriter(batch, limit=200)
        writer.add(blobs[:30])
        writer.add(blobs[20:])  # the first ten again: written once
        writer.abandon()  # the open pack goes; those already staged stay
        assert batch.put_new_packed(blobs) > 0  # what the abandoned pack held, again
    assert cache.absent(digest for digest, _ in blobs) == []
    assert all(cache.read_bytes(digest) == data for digest, data in blobs)
    assert not cache.tmp_dir.exists() or leftovers(cache.tmp_dir) == []
