"""Blobs a fetch keeps as local packs: checkout, push, gc and damage, with real files."""

from __future__ import annotations

import os
import stat

import pytest
from remote_support import clone, files_of, make_project

from pivot.cache.checkout import LinkMode, checkout
from pivot.cache.gc import collect_garbage
from pivot.cache.hashing import hash_bytes
from pivot.cache.objects import LocalCache
from pivot.cli.advice import paragraph
from pivot.errors import CorruptFile, DamagedBlob, PivotError
from pivot.remote import transfer
from pivot.remote.stores import open_remote
from pivot.run.lockfile import live, load_locks

FILES = {f"data/part{i:03d}.txt": f"row {i}\n".encode() * (50 + i) for i in range(120)}
FILES["data/exec.sh"] = b"#!/bin/sh\necho hi\n"
FILES["model.bin"] = os.urandom(20_000)


@pytest.fixture
def pulled(tmp_path):
    """A source project pushed to a directory remote, and a clone that pulled it."""
    src = make_project(tmp_path / "src", FILES)
    remote = open_remote(str(tmp_path / "remote"), name="test")
    transfer.push_locks(src, remote, load_locks(src))
    dst = clone(src, tmp_path / "dst")
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert result.incomplete == []
    return src, dst, remote


def test_pull_keeps_small_blobs_packed(pulled):
    src, dst, _ = pulled
    assert files_of(dst.root) == files_of(src.root)
    loose = [p for p in (dst.cache_dir / "objects").rglob("*") if p.is_file()]
    packs = sorted(p.name.rsplit(".", 1)[1] for p in (dst.cache_dir / "packs").iterdir())
    assert loose == [] and packs and set(packs) == {"idx", "pack"}
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    (lock,) = load_locks(dst)
    for out in lock.outs.values():
        assert cache.missing(out["hash"], out["kind"]) == []
    digest = hash_bytes(FILES["model.bin"])
    assert cache.has(digest) and cache.read_bytes(digest) == FILES["model.bin"]
    absent = hash_bytes(b"not in the cache")
    assert cache.sizes([digest, absent]) == {digest: len(FILES["model.bin"])}


@pytest.mark.parametrize("mode", list(LinkMode))
def test_checkout_from_packs_writes_independent_copies(pulled, mode):
    _, dst, _ = pulled
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    (lock,) = load_locks(dst)
    for rel, out in lock.outs.items():
        checkout(cache, out["hash"], out["kind"], dst.root / f"again-{rel}", mode)
    for rel, data in FILES.items():
        copy = dst.root / f"again-{rel}"
        assert copy.read_bytes() == data
        assert not copy.is_symlink() and copy.stat().st_nlink == 1
        assert copy.stat().st_mode & stat.S_IWUSR  # editable: not a read-only cache object


def test_push_from_packs_to_another_remote(pulled, tmp_path):
    _, dst, _ = pulled
    mirror = open_remote(str(tmp_path / "mirror"), name="mirror")
    sent = transfer.push_locks(dst, mirror, load_locks(dst))
    assert sent.blobs == len(FILES) + 1 and sent.missing == []
    third = clone(dst, tmp_path / "third")
    assert transfer.pull_locks(third, mirror, load_locks(third)).incomplete == []
    assert files_of(third.root) == files_of(dst.root)


def test_gc_drops_packs_only_when_nothing_in_them_is_needed(pulled):
    _, dst, _ = pulled
    packs_dir = dst.cache_dir / "packs"
    before = sorted(packs_dir.iterdir())
    kept = collect_garbage(dst, *live(load_locks(dst)))
    assert kept.objects_removed == 0 and kept.objects_kept == len(FILES) + 1
    assert sorted(packs_dir.iterdir()) == before
    dry = collect_garbage(dst, set(), [], dry_run=True)
    assert dry.objects_removed == len(FILES) + 1 and sorted(packs_dir.iterdir()) == before
    done = collect_garbage(dst, set(), [])
    assert done.objects_removed == len(FILES) + 1 and list(packs_dir.iterdir()) == []
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    assert not cache.has(hash_bytes(FILES["model.bin"]))


def test_pack_without_index_is_invisible_and_collected(pulled):
    _, dst, _ = pulled
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    digest = hash_bytes(FILES["data/part007.txt"])  # fetched after its tree manifest
    where = cache.packs.blobs()[digest]
    cache.packs.index_path(where.pack).rename(dst.root / "saved.idx")  # as if interrupted
    assert not cache.has(digest)
    summary = collect_garbage(dst, *live(load_locks(dst)))
    assert summary.objects_removed == 0 and summary.objects_kept > 0
    assert not cache.packs.pack_path(where.pack).exists()


def test_truncated_local_pack_is_a_clear_error(pulled):
    _, dst, _ = pulled
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    digest = hash_bytes(FILES["model.bin"])
    pack = cache.packs.pack_path(cache.packs.blobs()[digest].pack)
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as handle:
        handle.truncate(cache.packs.blobs()[digest].offset + 10)
    target = dst.root / "restored.bin"
    with pytest.raises(PivotError, match=r"local pack .*\.pack is damaged"):
        checkout(cache, digest, "file", target)
    assert not target.exists() and [p.name for p in dst.root.glob(".restored*")] == []


def test_gc_and_reads_survive_a_pack_file_gone_missing(pulled):
    _, dst, _ = pulled
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    digest = hash_bytes(FILES["data/part007.txt"])  # not in the tree manifest's pack
    where = cache.packs.blobs()[digest]
    cache.packs.pack_path(where.pack).unlink()  # the index stays behind
    with pytest.raises(CorruptFile, match=r"local pack .* is missing though its index") as info:
        cache.read_bytes(digest)
    assert info.value.path == cache.packs.index_path(where.pack)
    assert paragraph(info.value).endswith(
        "lists it. Delete the index (or run `pivot gc`), then pull again."
    )
    collect_garbage(dst, *live(load_locks(dst)))
    assert not cache.packs.index_path(where.pack).exists() and not cache.has(digest)


def test_pull_failing_midway_says_what_was_checked_out(tmp_path):
    files = {"small.txt": b"small\n" * 10, "huge.bin": os.urandom(transfer.LARGE + 1)}
    src = make_project(tmp_path / "src", files)
    remote = open_remote(str(tmp_path / "remote"), name="test")
    transfer.push_locks(src, remote, load_locks(src))
    huge = hash_bytes(files["huge.bin"])
    (tmp_path / "remote" / "packs" / huge[:2] / huge).unlink()  # the large blob's pack
    dst = clone(src, tmp_path / "dst")
    with pytest.raises(PivotError, match=r"1 output\(s\) were checked out in full: small\.txt"):
        transfer.pull_locks(dst, remote, load_locks(dst))
    assert (dst.root / "small.txt").read_bytes() == files["small.txt"]
    assert not (dst.root / "huge.bin").exists()


def _spoil(cache: LocalCache, digest: str) -> None:
    """Flip the last stored byte of the packed blob `digest` in its local pack."""
    where = cache.packs.blobs()[digest]
    pack = cache.packs.pack_path(where.pack)
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as handle:
        handle.seek(where.offset + where.length - 1)
        last = handle.read(1)
        handle.seek(where.offset + where.length - 1)
        handle.write(bytes([last[0] ^ 0x01]))


def test_read_each_reads_neighbours_together_and_sets_aside_a_damaged_one(pulled):
    _, dst, _ = pulled
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    packed = cache.packs.blobs()
    parts = sorted(
        (d for d in {hash_bytes(v) for k, v in FILES.items() if k.startswith("data/")}),
        key=packed.__getitem__,
    )
    bad = parts[len(parts) // 2]
    _spoil(cache, bad)
    by_hash = {hash_bytes(v): v for v in FILES.values()}
    found = dict(LocalCache(dst.cache_dir, dst.tmp_dir).read_each(parts))
    assert list(found) == parts
    assert isinstance(found.pop(bad), DamagedBlob)
    assert found == {d: by_hash[d] for d in parts if d != bad}
    assert not cache.has(bad)  # dropped from its pack's index


def test_push_from_packs_sends_all_but_a_damaged_blob(pulled, tmp_path):
    _, dst, _ = pulled
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    bad = hash_bytes(FILES["data/part050.txt"])
    _spoil(cache, bad)
    mirror = open_remote(str(tmp_path / "mirror"), name="mirror")
    with pytest.raises(DamagedBlob, match=rf"{bad} does not match its hash"):
        transfer.push_locks(dst, mirror, load_locks(dst))
    held = transfer.remote_contents(dst, mirror).blobs
    assert bad not in held
    assert {hash_bytes(v) for v in FILES.values()} - {bad} <= set(held)


def test_checkout_hashes_packed_blobs_it_did_not_just_fetch(pulled):
    """A pull trusts the packs it has just written from verified bytes; any other
    checkout (another command) verifies every packed blob it places."""
    _, dst, _ = pulled
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    _spoil(cache, hash_bytes(FILES["data/part050.txt"]))
    (lock,) = load_locks(dst)
    out = lock.outs["data"]
    target = dst.root / "again"
    with pytest.raises(DamagedBlob, match=r"part050\.txt|is damaged"):
        checkout(LocalCache(dst.cache_dir, dst.tmp_dir), out["hash"], out["kind"], target)
    assert not target.exists() and [p.name for p in dst.root.glob(".again*")] == []
