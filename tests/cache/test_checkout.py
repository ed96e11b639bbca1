"""Checkout from the local cache on real files: atomic, verified, in every link mode."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest
from cache_support import (
    TREE,
    expected,
    interrupt,
    leftovers,
    objects,
    snapshot,
    write_tree,
)
from support import add_blob

from pivot.cache import checkout as checkout_mod
from pivot.cache.checkout import LinkMode, checkout
from pivot.cache.hashing import DIR, FILE, hash_bytes
from pivot.errors import DamagedBlob


def test_tree_checkout_is_byte_identical_with_modes(tmp_path, cache, stored, umask_077):
    dest = tmp_path / "ws" / "out"
    placed = checkout(cache, stored.hash, DIR, dest)
    assert snapshot(dest) == expected(TREE)
    assert {rel: h for rel, h, _ in placed} == {rel: hash_bytes(data) for rel, data in TREE.items()}
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
    checkout(cache, stored.hash, DIR, dest)
    assert not dest.is_symlink() and snapshot(dest) == expected(TREE)
    assert (tmp_path / "src").is_dir()  # a replaced symlink's target is left alone
    assert leftovers(dest.parent) == []


def test_exchange_fallback_replaces_a_tree(tmp_path, cache, stored, monkeypatch):
    monkeypatch.setattr(checkout_mod, "_exchange", lambda a, b: False)
    dest = write_tree(tmp_path / "ws" / "out", {"stale.txt": b"old"})
    checkout(cache, stored.hash, DIR, dest)
    assert snapshot(dest) == expected(TREE) and leftovers(dest.parent) == []


def _previous(tmp_path: pathlib.Path) -> pathlib.Path:
    return write_tree(tmp_path / "ws" / "out", {"kept.txt": b"previous output"})


def test_checkout_with_a_missing_blob_keeps_the_previous_output(tmp_path, cache, stored):
    cache.path(hash_bytes(TREE["many/3/f003.txt"])).unlink()
    dest = _previous(tmp_path)
    with pytest.raises(FileNotFoundError):
        checkout(cache, stored.hash, DIR, dest)
    assert snapshot(dest) == {"kept.txt": (b"previous output", 0o644)}
    assert leftovers(dest.parent) == []


def test_checkout_of_a_missing_tree_creates_nothing(tmp_path, cache, stored):
    cache.path(hash_bytes(TREE["sub/deeper/b.bin"])).unlink()
    dest = tmp_path / "ws" / "out"
    with pytest.raises(FileNotFoundError):
        checkout(cache, stored.hash, DIR, dest)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_checkout_with_a_truncated_blob_is_refused(tmp_path, cache, stored):
    path = cache.path(hash_bytes(TREE["sub/deeper/b.bin"]))
    path.chmod(0o644)
    path.write_bytes(TREE["sub/deeper/b.bin"][:100])
    dest = _previous(tmp_path)
    with pytest.raises(DamagedBlob, match="damaged") as raised:
        checkout(cache, stored.hash, DIR, dest)
    assert (raised.value.digest, raised.value.path) == (hash_bytes(TREE["sub/deeper/b.bin"]), dest)
    assert snapshot(dest) == {"kept.txt": (b"previous output", 0o644)}
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("at", [0, 100, "swap"])
def test_interrupted_checkout_cleans_up(tmp_path, cache, stored, monkeypatch, at):
    """Ctrl-C in the middle of placing files (or at the swap) changes nothing."""
    dest = _previous(tmp_path)
    if at == "swap":
        monkeypatch.setattr(checkout_mod, "_swap", interrupt)
    else:
        real_copy = checkout_mod._copy_file
        count = iter(range(10_000))

        def copy(*args):
            if next(count) == at:
                raise KeyboardInterrupt
            real_copy(*args)

        monkeypatch.setitem(checkout_mod._PLACE, LinkMode.COPY, copy)
    with pytest.raises(KeyboardInterrupt):
        checkout(cache, stored.hash, DIR, dest)
    assert snapshot(dest) == {"kept.txt": (b"previous output", 0o644)}
    assert leftovers(dest.parent) == []


def test_replacing_a_tree_keeps_the_files_that_are_already_right(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    checkout(cache, stored.hash, DIR, dest)
    (dest / "a.txt").chmod(0o644)
    (dest / "a.txt").write_bytes(b"edited")  # content differs: replaced
    (dest / "run.sh").chmod(0o644)  # mode differs: replaced
    (dest / "sub" / "empty").unlink()  # absent: copied
    (dest / "extra.txt").write_bytes(b"not in the tree")  # removed with the old tree
    before = {p: p.stat().st_ino for p in dest.rglob("*") if p.is_file()}
    placed = checkout(cache, stored.hash, DIR, dest)
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
    checkout(cache, stored.hash, DIR, dest)
    (dest / "a.txt").write_bytes(b"edited")
    monkeypatch.setattr(checkout_mod, "_swap", interrupt)
    with pytest.raises(KeyboardInterrupt):
        checkout(cache, stored.hash, DIR, dest)
    assert snapshot(dest) == {**expected(TREE), "a.txt": (b"edited", 0o644)}
    assert all((dest / rel).stat().st_nlink == 1 for rel in TREE)
    assert leftovers(dest.parent) == []


def test_copies_never_reuse_links_into_the_cache(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    checkout(cache, stored.hash, DIR, dest, LinkMode.HARDLINK)
    checkout(cache, stored.hash, DIR, dest, LinkMode.COPY)
    for rel, data in TREE.items():
        assert (dest / rel).stat().st_ino != cache.path(hash_bytes(data)).stat().st_ino
    checkout(cache, stored.hash, DIR, dest, LinkMode.SYMLINK)
    assert all((dest / rel).is_symlink() for rel in TREE)
    checkout(cache, stored.hash, DIR, dest, LinkMode.COPY)
    assert not any((dest / rel).is_symlink() for rel in TREE)
    assert snapshot(dest) == expected(TREE)


def test_hardlink_tree_checkout_shares_the_cache_objects(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    checkout(cache, stored.hash, DIR, dest, LinkMode.HARDLINK)
    assert {k: v[0] for k, v in snapshot(dest).items()} == TREE
    for rel, data in TREE.items():
        assert (dest / rel).stat().st_ino == cache.path(hash_bytes(data)).stat().st_ino
    # Switching to copies replaces the links (the cache objects stay read-only).
    checkout(cache, stored.hash, DIR, dest, LinkMode.COPY)
    assert snapshot(dest) == expected(TREE)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in objects(cache))


def test_symlink_tree_checkout_points_into_the_cache(tmp_path, cache, stored):
    dest = tmp_path / "ws" / "out"
    checkout(cache, stored.hash, DIR, dest, LinkMode.SYMLINK)
    assert {k: v[0] for k, v in snapshot(dest).items()} == TREE
    for rel, data in TREE.items():
        assert (dest / rel).is_symlink()
        assert os.readlink(dest / rel) == str(cache.path(hash_bytes(data)))
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("mode", list(LinkMode))
@pytest.mark.parametrize("previous", [None, "file", "tree"])
def test_file_checkout(tmp_path, cache, mode, previous, umask_077):
    digest = add_blob(cache, b"model weights")
    dest = tmp_path / "ws" / "model.bin"
    if previous == "file":
        dest.write_bytes(b"old")
    elif previous == "tree":
        write_tree(dest, {"x/y": b"old"})
    assert checkout(cache, digest, FILE, dest, mode) == [("", digest, None)]
    assert dest.read_bytes() == b"model weights"
    if mode is LinkMode.COPY:
        assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert (mode is LinkMode.SYMLINK) == dest.is_symlink()
    assert leftovers(dest.parent) == []


def test_failed_file_checkout_keeps_the_previous_file(tmp_path, cache):
    dest = tmp_path / "out.txt"
    dest.write_bytes(b"previous")
    with pytest.raises(FileNotFoundError):
        checkout(cache, "ab" * 32, FILE, dest)
    assert dest.read_bytes() == b"previous" and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- hashing


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
        checkout(cache, digest, FILE, dest, LinkMode.HARDLINK)
        assert dest.read_bytes() == b"across\n" and dest.stat().st_nlink == 1
