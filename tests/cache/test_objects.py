"""The local cache's objects: storing outputs, reading blobs, hashing, the state db."""

from __future__ import annotations

import os
import stat

import blake3
import pytest
from cache_support import (
    TREE,
    assert_rows_are_current,
    leftovers,
    objects,
    write_tree,
)

from pivot.cache import batch as batch_mod
from pivot.cache import hashing
from pivot.cache.hashing import DIR, FILE, hash_bytes
from pivot.cache.state import StateDB


def test_add_output_stores_every_file_read_only(tmp_path, cache):
    src = write_tree(tmp_path / "src", TREE)
    output, rows = cache.add_output(src, tmp_path)
    assert output.kind == DIR and output.nfiles == len(TREE)
    assert output.size == sum(len(v) for v in TREE.values())
    # The stat-cache rows: each file's project path, its stat key when read, its hash.
    assert {r[0]: r[5] for r in rows} == {f"src/{rel}": hash_bytes(d) for rel, d in TREE.items()}
    assert_rows_are_current(rows, tmp_path)
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
    output, rows = cache.add_output(path, tmp_path)
    assert output.kind == FILE and output.size == 7000
    st = path.stat()
    digest = hash_bytes(b"weights" * 1000)
    assert rows == [("model.bin", 7000, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest)]
    assert cache.read_bytes(output.hash) == b"weights" * 1000


def test_large_files_stream_through_the_cache(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(batch_mod, "SMALL_FILE", 1000)
    data = os.urandom(50_000)
    src = write_tree(tmp_path / "src", {"big.bin": data, "twin.bin": data, "small": b"s"})
    _, rows = cache.add_output(src, tmp_path)
    hashes = {r[0]: r[5] for r in rows}
    assert hashes["src/big.bin"] == hash_bytes(data) == hashes["src/twin.bin"]
    assert cache.read_bytes(hash_bytes(data)) == data
    assert cache.add_file(src / "big.bin") == (hash_bytes(data), len(data))
    assert leftovers(cache.tmp_dir) == []


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 5])
def test_hash_file_reads_in_bounded_chunks(tmp_path, monkeypatch, size):
    monkeypatch.setattr(hashing, "CHUNK", 4096)
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
