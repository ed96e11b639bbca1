"""The local cache on real files: atomic tree checkouts, batched inserts, hashing."""

from __future__ import annotations

import os
import pathlib
import stat
import threading

import blake3
import pytest

from pivot.cache import hashing
from pivot.cache import store as cache_mod
from pivot.cache.hashing import DIR, FILE, hash_bytes
from pivot.cache.state import StateDB
from pivot.cache.store import LinkMode, LocalCache
from pivot.errors import PivotError

# More files than PARALLEL_MIN, so trees go through the thread pool.
MANY = {f"many/{i % 7}/f{i:03d}.txt": f"file {i}\n".encode() * (i % 5) for i in range(150)}
TREE = {
    "a.txt": b"alpha\n" * 100,
    "run.sh": b"#!/bin/sh\necho hi\n",
    "sub/deeper/b.bin": os.urandom(9000),
    "sub/empty": b"",
    "sub/same-as-a.txt": b"alpha\n" * 100,
    **MANY,
}
EXECUTABLE = {"run.sh"}


def write_tree(root: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if rel in EXECUTABLE else 0o644)
    return root


def snapshot(root: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its bytes and permission bits (links followed)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def expected(files: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
    return {rel: (data, 0o755 if rel in EXECUTABLE else 0o644) for rel, data in files.items()}


def leftovers(folder: pathlib.Path) -> list[str]:
    """Temp files or folders a cache operation left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if ".pivot-" in p.name or "blob." in p.name)


@pytest.fixture
def cache(tmp_path) -> LocalCache:
    (tmp_path / "ws").mkdir()  # the folder outputs are checked out into (it must exist)
    return LocalCache(tmp_path / "cache", tmp_path / "tmp")


@pytest.fixture
def stored(tmp_path, cache):
    src = write_tree(tmp_path / "src", TREE)
    return cache.add_output(src, tmp_path)[0]


@pytest.fixture
def umask_077():
    old = os.umask(0o077)
    yield
    os.umask(old)


def interrupt(*args) -> None:
    raise KeyboardInterrupt


def objects(cache: LocalCache) -> list[pathlib.Path]:
    return [p for p in cache.objects.rglob("*") if p.is_file()]


# ----------------------------------------------------------------------------- insertion


def test_add_output_stores_every_file_read_only(tmp_path, cache):
    src = write_tree(tmp_path / "src", TREE)
    output, files = cache.add_output(src, tmp_path)
    assert output.kind == DIR and output.nfiles == len(TREE)
    assert output.size == sum(len(v) for v in TREE.values())
    assert dict(files) == {rel: hash_bytes(data) for rel, data in TREE.items()}
    entries = {e.relpath: e for e in cache.tree(output.hash)}
    assert entries["run.sh"].mode == 0o755 and entries["a.txt"].mode == 0o644
    assert len(objects(cache)) == len(set(TREE.values())) + 1  # duplicates stored once
    for path in objects(cache):
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert hash_bytes(path.read_bytes()) == path.parent.name + path.name
    assert leftovers(cache.tmp_dir) == []


def test_add_output_does_not_rewrite_blobs_it_has(tmp_path, cache, stored):
    inodes = {p: p.stat().st_ino for p in objects(cache)}
    again, _ = cache.add_output(tmp_path / "src", tmp_path)
    assert again == stored
    assert {p: p.stat().st_ino for p in objects(cache)} == inodes


def test_add_output_of_a_single_file(tmp_path, cache):
    path = tmp_path / "model.bin"
    path.write_bytes(b"weights" * 1000)
    output, files = cache.add_output(path, tmp_path)
    assert output.kind == FILE and output.size == 7000
    assert files == [("", hash_bytes(b"weights" * 1000))]
    assert cache.read_bytes(output.hash) == b"weights" * 1000


def test_large_files_stream_through_the_cache(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(cache_mod, "SMALL_FILE", 1000)
    data = os.urandom(50_000)
    src = write_tree(tmp_path / "src", {"big.bin": data, "twin.bin": data, "small": b"s"})
    _, files = cache.add_output(src, tmp_path)
    assert dict(files)["big.bin"] == hash_bytes(data) == dict(files)["twin.bin"]
    assert cache.read_bytes(hash_bytes(data)) == data
    assert cache.add_file(src / "big.bin") == (hash_bytes(data), len(data))
    assert leftovers(cache.tmp_dir) == []


def test_batch_publishes_only_at_commit(cache):
    blobs = [f"blob {i}".encode() for i in range(100)]
    with cache.batch() as batch:
        for data in blobs:
            batch.put_bytes(data)
        batch.put_bytes(blobs[0])  # staged twice: stored once
        assert len(batch) == len(blobs)
        assert not any(cache.has(hash_bytes(d)) for d in blobs)
    assert all(cache.read_bytes(hash_bytes(d)) == d for d in blobs)
    assert leftovers(cache.tmp_dir) == []


@pytest.mark.parametrize("count", [3, 100])
def test_batch_is_flushed_before_any_rename(cache, monkeypatch, count):
    """A small batch fsyncs its files, a large one flushes the filesystem, always first."""
    events = []
    real_replace = os.replace
    monkeypatch.setattr(cache_mod, "_syncfs", lambda folder: events.append("syncfs"))
    monkeypatch.setattr(cache_mod, "_fsync_path", lambda path: events.append("fsync"))
    monkeypatch.setattr(
        cache_mod.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))
    )
    with cache.batch() as batch:
        for i in range(count):
            batch.put_bytes(f"blob {i}".encode())
    flushes = ["syncfs"] if count >= cache_mod.SYNCFS_MIN else ["fsync"] * count
    assert events == [*flushes, *["rename"] * count]


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

    monkeypatch.setattr(cache_mod.os, "replace", flaky)
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


def test_tree_checkout_is_byte_identical_with_modes(tmp_path, cache, stored, umask_077):
    dest = tmp_path / "ws" / "out"
    placed = cache.checkout(stored.hash, DIR, dest)
    assert snapshot(dest) == expected(TREE)
    assert dict(placed) == {rel: hash_bytes(data) for rel, data in TREE.items()}
    assert leftovers(dest.parent) == []
    # Workspace copies are independent of the read-only cache objects.
    (dest / "a.txt").write_bytes(b"edited")
    assert cache.read_bytes(hash_bytes(TREE["a.txt"])) == TREE["a.txt"]


@pytest.mark.parametrize("previous", ["tree", "file", "symlink", "empty-dir"])
def test_tree_checkout_replaces_what_is_there(tmp_path, cache, stored, previous):
    dest = tmp_path / "ws" / "out"
    if previous == "tree":
        write_tree(dest, {"stale.txt": b"old", "sub/other": b"old"})
    elif previous == "file":
        dest.write_bytes(b"old file")
    elif previous == "symlink":
        dest.symlink_to(tmp_path / "src")
    else:
        dest.mkdir()
    cache.checkout(stored.hash, DIR, dest)
    assert not dest.is_symlink() and snapshot(dest) == expected(TREE)
    assert (tmp_path / "src").is_dir()  # a replaced symlink's target is left alone
    assert leftovers(dest.parent) == []


def test_exchange_fallback_replaces_a_tree(tmp_path, cache, stored, monkeypatch):
    monkeypatch.setattr(cache_mod, "_exchange", lambda a, b: False)
    dest = write_tree(tmp_path / "ws" / "out", {"stale.txt": b"old"})
    cache.checkout(stored.hash, DIR, dest)
    assert snapshot(dest) == expected(TREE) and leftovers(dest.parent) == []


def _previous(tmp_path: pathlib.Path) -> pathlib.Path:
    return write_tree(tmp_path / "ws" / "out", {"kept.txt": b"previous output"})


def test_checkout_with_a_missing_blob_keeps_the_previous_output(tmp_path, cache, stored):
    cache.path(hash_bytes(TREE["many/3/f003.txt"])).unlink()
    dest = _previous(tmp_path)
    with pytest.raises(FileNotFoundError):
        cache.checkout(stored.hash, DIR, dest)
    assert snapshot(dest) == {"kept.txt": (b"previous output", 0o644)}
    assert leftovers(dest.parent) == []


def test_checkout_of_a_missing_tree_creates_nothing(tmp_path, cache, stored):
    cache.path(hash_bytes(TREE["sub/deeper/b.bin"])).unlink()
    dest = tmp_path / "ws" / "out"
    with pytest.raises(FileNotFoundError):
        cache.checkout(stored.hash, DIR, dest)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_checkout_with_a_truncated_blob_is_refused(tmp_path, cache, stored):
    path = cache.path(hash_bytes(TREE["sub/deeper/b.bin"]))
    path.chmod(0o644)
    path.write_bytes(TREE["sub/deeper/b.bin"][:100])
    dest = _previous(tmp_path)
    with pytest.raises(PivotError, match="damaged"):
        cache.checkout(stored.hash, DIR, dest)
    assert snapshot(dest) == {"kept.txt": (b"previous output", 0o644)}
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("at", [0, 100, "swap"])
def test_interrupted_checkout_cleans_up(tmp_path, cache, stored, monkeypatch, at):
    """Ctrl-C in the middle of placing files (or at the swap) changes nothing."""
    dest = _previous(tmp_path)
    if at == "swap":
        monkeypatch.setattr(cache_mod, "_swap", interrupt)
    else:
        real_copy = cache_mod._copy_file
        count = iter(range(10_000))

        def copy(*args):
            if next(count) == at:
                raise KeyboardInterrupt
            real_copy(*args)

        monkeypatch.setitem(cache_mod._PLACE, LinkMode.COPY, copy)
    with pytest.raises(KeyboardInterrupt):
        cache.checkout(stored.hash, DIR, dest)
    assert snapshot(dest) == {"kept.txt": (b"previous output", 0o644)}
    assert leftovers(dest.parent) == []


def test_replacing_a_tree_keeps_the_files_that_are_already_right(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    cache.checkout(stored.hash, DIR, dest)
    (dest / "a.txt").chmod(0o644)
    (dest / "a.txt").write_bytes(b"edited")  # content differs: replaced
    (dest / "run.sh").chmod(0o644)  # mode differs: replaced
    (dest / "sub" / "empty").unlink()  # absent: copied
    (dest / "extra.txt").write_bytes(b"not in the tree")  # removed with the old tree
    before = {p: p.stat().st_ino for p in dest.rglob("*") if p.is_file()}
    placed = cache.checkout(stored.hash, DIR, dest)
    assert snapshot(dest) == expected(TREE) and len(placed) == len(TREE)
    kept = {
        p.relative_to(dest).as_posix()
        for p in before
        if p.exists() and p.stat().st_ino == before[p]
    }
    assert kept == set(TREE) - {"a.txt", "run.sh", "sub/empty"}
    assert all((dest / rel).stat().st_nlink == 1 for rel in TREE)
    assert leftovers(dest.parent) == []


def test_interrupted_replace_keeps_the_previous_tree(tmp_path, cache, stored, monkeypatch):
    dest = tmp_path / "ws" / "out"
    cache.checkout(stored.hash, DIR, dest)
    (dest / "a.txt").write_bytes(b"edited")
    monkeypatch.setattr(cache_mod, "_swap", interrupt)
    with pytest.raises(KeyboardInterrupt):
        cache.checkout(stored.hash, DIR, dest)
    assert snapshot(dest) == {**expected(TREE), "a.txt": (b"edited", 0o644)}
    assert all((dest / rel).stat().st_nlink == 1 for rel in TREE)
    assert leftovers(dest.parent) == []


def test_copies_never_reuse_links_into_the_cache(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    cache.checkout(stored.hash, DIR, dest, LinkMode.HARDLINK)
    cache.checkout(stored.hash, DIR, dest, LinkMode.COPY)
    for rel, data in TREE.items():
        assert (dest / rel).stat().st_ino != cache.path(hash_bytes(data)).stat().st_ino
    cache.checkout(stored.hash, DIR, dest, LinkMode.SYMLINK)
    assert all((dest / rel).is_symlink() for rel in TREE)
    cache.checkout(stored.hash, DIR, dest, LinkMode.COPY)
    assert not any((dest / rel).is_symlink() for rel in TREE)
    assert snapshot(dest) == expected(TREE)


def test_hardlink_tree_checkout_shares_the_cache_objects(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    cache.checkout(stored.hash, DIR, dest, LinkMode.HARDLINK)
    assert {k: v[0] for k, v in snapshot(dest).items()} == TREE
    for rel, data in TREE.items():
        assert (dest / rel).stat().st_ino == cache.path(hash_bytes(data)).stat().st_ino
    # Switching to copies replaces the links (the cache objects stay read-only).
    cache.checkout(stored.hash, DIR, dest, LinkMode.COPY)
    assert snapshot(dest) == expected(TREE)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in objects(cache))


def test_symlink_tree_checkout_points_into_the_cache(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    cache.checkout(stored.hash, DIR, dest, LinkMode.SYMLINK)
    assert {k: v[0] for k, v in snapshot(dest).items()} == TREE
    for rel, data in TREE.items():
        assert (dest / rel).is_symlink()
        assert os.readlink(dest / rel) == str(cache.path(hash_bytes(data)))
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("mode", list(LinkMode))
@pytest.mark.parametrize("previous", [None, "file", "tree"])
def test_file_checkout(tmp_path, cache, mode, previous, umask_077):
    digest = cache.add_bytes(b"model weights")
    dest = tmp_path / "ws" / "model.bin"
    if previous == "file":
        dest.write_bytes(b"old")
    elif previous == "tree":
        write_tree(dest, {"x/y": b"old"})
    assert cache.checkout(digest, FILE, dest, mode) == [("", digest)]
    assert dest.read_bytes() == b"model weights"
    if mode is LinkMode.COPY:
        assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert (mode is LinkMode.SYMLINK) == dest.is_symlink()
    assert leftovers(dest.parent) == []


def test_failed_file_checkout_keeps_the_previous_file(tmp_path, cache):
    dest = tmp_path / "out.txt"
    dest.write_bytes(b"previous")
    with pytest.raises(FileNotFoundError):
        cache.checkout("ab" * 32, FILE, dest)
    assert dest.read_bytes() == b"previous" and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- hashing


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_hash_file_reads_in_bounded_chunks(tmp_path, monkeypatch, size):
    monkeypatch.setattr(hashing, "HASH_CHUNK", 4096)
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hashing.hash_file(path) == blake3.blake3(data).hexdigest()


# ----------------------------------------------------------------------------- state db


def test_state_db_delete_and_items(tmp_path):
    state = StateDB(tmp_path / "state.db")
    state.put("ns", "b", b"2")
    state.put("ns", "a", b"1")
    state.put("other", "a", b"x")
    assert state.items("ns") == [("a", b"1"), ("b", b"2")]
    state.delete("ns", "a")
    state.delete("ns", "absent")
    assert state.items("ns") == [("b", b"2")] and state.get("ns", "a") is None
    assert state.get("other", "a") == b"x"
    state.close()


def test_hardlink_checkout_across_filesystems_copies(cache, tmp_path) -> None:
    """/dev/shm is tmpfs: no hard link can reach it from the cache, so the file is copied."""
    import tempfile

    shm = pathlib.Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem at /dev/shm")
    src = tmp_path / "out.txt"
    src.write_bytes(b"across\n")
    digest, _ = cache.add_file(src)
    with tempfile.TemporaryDirectory(dir=shm) as other:
        dest = pathlib.Path(other) / "out.txt"
        cache.checkout(digest, FILE, dest, LinkMode.HARDLINK)
        assert dest.read_bytes() == b"across\n" and dest.stat().st_nlink == 1
