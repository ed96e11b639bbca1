"""A subfolder or file of a folder being stored, swapped for a symbolic link after the
walk listed it and before its files are read (a deterministic hook between the two
steps): it is refused, never followed, and nothing outside is stored."""

from __future__ import annotations

import os
import pathlib

import pytest
from cache_support import leftovers

from pivot.cache.folder_packs import PACK_FILE_MAX
from pivot.cache.hashing import hash_bytes
from pivot.cache.tree_files import TreeFiles
from pivot.errors import UnsafePath

SECRET = b"outside the project\n"


@pytest.fixture
def outside(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder outside the project laid out like the output's `sub/` (what a link would
    reach), and a file next to it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "x.txt").write_bytes(SECRET)
    (folder / "big.bin").write_bytes(SECRET * (PACK_FILE_MAX // len(SECRET) + 1))
    return folder


def _swap_after_walk(monkeypatch, swap) -> None:
    """Run `swap()` once the walk has listed the folder, before any file is read."""
    walk = TreeFiles.walk

    def walked(self):
        found = walk(self)
        swap()
        return found

    monkeypatch.setattr(TreeFiles, "walk", walked)


@pytest.mark.parametrize("packed", [False, True])
def test_a_subfolder_swapped_for_a_link_after_the_walk_is_not_followed(
    tmp_path, cache, outside, monkeypatch, packed
):
    project = tmp_path / "proj"
    out = project / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("a\n")
    (out / "sub" / "x.txt").write_text("mine\n")
    (out / "sub" / "big.bin").write_text("mine too\n")

    def swap():
        (out / "sub").rename(tmp_path / "moved")
        os.symlink(outside, out / "sub")

    _swap_after_walk(monkeypatch, swap)
    with pytest.raises(UnsafePath) as raised:
        cache.add_output(out, project, packed=packed)
    assert "'out/sub' is no longer a folder" in str(raised.value)
    assert not cache.has(hash_bytes(SECRET))
    assert not cache.has(hash_bytes((outside / "big.bin").read_bytes()))
    assert not cache.tmp_dir.exists() or leftovers(cache.tmp_dir) == []


@pytest.mark.parametrize("packed", [False, True])
def test_a_file_swapped_for_a_link_after_the_walk_is_not_followed(
    tmp_path, cache, outside, monkeypatch, packed
):
    project = tmp_path / "proj"
    out = project / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "x.txt").write_text("mine\n")

    def swap():
        (out / "sub" / "x.txt").unlink()
        os.symlink(outside / "x.txt", out / "sub" / "x.txt")

    _swap_after_walk(monkeypatch, swap)
    with pytest.raises(UnsafePath) as raised:
        cache.add_output(out, project, packed=packed)
    assert "'out/sub/x.txt' is no longer a file" in str(raised.value)
    assert not cache.has(hash_bytes(SECRET))


def test_a_tree_with_nested_folders_and_an_inner_link_is_stored_as_before(tmp_path, cache):
    project = tmp_path / "proj"
    out = project / "out"
    (out / "a" / "b" / "c").mkdir(parents=True)
    (out / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (out / "a" / "one.txt").write_text("one\n")
    (out / "top.txt").write_text("top\n")
    (out / "a" / "link.txt").symlink_to("../top.txt")
    stored, _ = cache.add_output(out, project)
    entries = {e.relpath: e.hash for e in cache.tree(stored.hash)}
    assert entries == {
        "a/b/c/deep.txt": hash_bytes(b"deep\n"),
        "a/one.txt": hash_bytes(b"one\n"),
        "a/link.txt": hash_bytes(b"top\n"),
        "top.txt": hash_bytes(b"top\n"),
    }
