"""A directory output of many files keeps its small files in local packs
(`folder_packs.store_files`, as `track` does): stored once, in bounded packs, checked out exactly in every
link mode, nothing left by an interrupted store; a large file of it stays loose."""

from __future__ import annotations

import os
import stat

import pytest
from cache_support import (
    assert_rows_are_current,
    expected,
    leftovers,
    objects,
    snapshot,
    write_tree,
)

from pivot.cache import folder_packs
from pivot.cache.checkout import LinkMode, checkout
from pivot.cache.hashing import DIR, hash_bytes
from pivot.cache.objects import PACKED_TREE
from pivot.cache.tree_files import TreeFiles

MANY = {f"d{i % 9}/f{i:04d}.txt": f"file {i}\n".encode() * (1 + i % 13) for i in range(1200)}
BIG = os.urandom(folder_packs.PACK_FILE_MAX + 1)
TREE = {**MANY, "big.bin": BIG, "dup.txt": MANY["d0/f0000.txt"], "run.sh": b"#!/bin/sh\n"}


def _packs(cache) -> list[str]:
    return sorted(p.name for p in cache.packs.root.iterdir()) if cache.packs.root.exists() else []


def test_small_files_of_a_large_tree_are_packed_and_check_out_exactly(tmp_path, cache):
    assert len(MANY) >= PACKED_TREE
    src = write_tree(tmp_path / "src", TREE)
    stored, rows = cache.add_output(src, tmp_path)
    assert stored.kind == DIR and stored.nfiles == len(TREE)
    assert {r[0]: r[5] for r in rows} == {f"src/{rel}": hash_bytes(d) for rel, d in TREE.items()}
    assert_rows_are_current(rows, tmp_path)
    # Only the large file and the manifest are loose; the rest lies in one pack.
    loose = {p.parent.name + p.name for p in objects(cache)}
    assert loose == {hash_bytes(BIG), stored.hash}
    assert [name.rsplit(".", 1)[1] for name in _packs(cache)] == ["idx", "pack"]
    assert cache.missing(stored.hash, DIR) == []
    assert leftovers(cache.tmp_dir) == []
    for mode in LinkMode:
        dest = tmp_path / "ws" / f"out-{mode.value}"
        checkout(cache, stored.hash, DIR, dest, mode)
        assert {k: v[0] for k, v in snapshot(dest).items()} == TREE
        assert stat.S_IMODE((dest / "run.sh").stat().st_mode) & 0o100
    copy = tmp_path / "ws" / "out-copy"
    assert snapshot(copy) == expected(TREE)  # run.sh executable, the rest 0o644


def test_packed_copies_come_with_their_current_stat(tmp_path, cache, umask_077):
    """The stats a checkout returns for the files it wrote from packs (which the stat
    cache records) are those the files have once in place, also where the umask made a
    chmod necessary (run.sh); the others are left for the caller to stat."""
    stored, _ = cache.add_output(write_tree(tmp_path / "src", TREE), tmp_path)
    dest = tmp_path / "ws" / "out"
    placed = checkout(cache, stored.hash, DIR, dest)
    assert snapshot(dest) == expected(TREE)
    with_stat = {rel: st for rel, _, st in placed if st is not None}
    assert set(with_stat) == set(MANY) | {"dup.txt", "run.sh"}  # big.bin is loose
    rows = [
        (f"out/{rel}", st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, "")
        for rel, st in with_stat.items()
    ]
    assert_rows_are_current(rows, dest.parent)


def test_storing_the_same_tree_again_adds_nothing(tmp_path, cache):
    src = write_tree(tmp_path / "src", TREE)
    first = cache.add_output(src, tmp_path)[0]
    packs = _packs(cache)
    assert cache.add_output(src, tmp_path)[0] == first
    assert _packs(cache) == packs


def test_pending_blobs_are_staged_as_several_bounded_packs(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(folder_packs, "PACK_BYTES", 4096)
    src = write_tree(tmp_path / "src", MANY)
    stored = cache.add_output(src, tmp_path)[0]
    packs = [name for name in _packs(cache) if name.endswith(".pack")]
    assert len(packs) > 5
    assert all(os.path.getsize(cache.packs.root / name) < 4096 + 200 for name in packs)
    dest = tmp_path / "ws" / "out"
    checkout(cache, stored.hash, DIR, dest, LinkMode.COPY)
    assert {k: v[0] for k, v in snapshot(dest).items()} == MANY


def test_an_interrupted_store_leaves_nothing(tmp_path, cache):
    src = write_tree(tmp_path / "src", MANY)
    with pytest.raises(KeyboardInterrupt), cache.batch() as batch:
        with TreeFiles(str(src), "src") as tree:
            folder_packs.store_files(batch, list(MANY), tree.open)
        raise KeyboardInterrupt
    assert _packs(cache) == [] and objects(cache) == []
    assert not cache.tmp_dir.exists() or leftovers(cache.tmp_dir) == []
