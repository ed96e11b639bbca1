"""A tree manifest entry with the right hash but the wrong size is an error in the
manifest: the good cache object it names is never set aside as damaged (gc would then
delete it, and every other output sharing it would lose it)."""

from __future__ import annotations

from paths_support import cache_file, write_lock
from support import add_blob, write_files

from pivot.cache.hashing import TreeEntry, encode_tree, hash_bytes
from pivot.cache.objects import LocalCache
from pivot.project import Project

PIPELINE = """
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def tree() -> Annotated[pathlib.Path, pivot.Out("data", pivot.loaders.PathOnly())]:
    raise RuntimeError("declared only")

def single() -> Annotated[pathlib.Path, pivot.Out("copy.txt", pivot.loaders.PathOnly())]:
    raise RuntimeError("declared only")

pipeline.register(tree)
pipeline.register(single)
"""
SHARED = b"shared content\n" * 10


def test_a_wrong_size_in_a_manifest_names_the_manifest_and_keeps_the_object(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE})
    blob = cache_file(project, SHARED)
    manifest = encode_tree([TreeEntry("a.txt", blob["hash"], len(SHARED) + 5, 0o644)])
    cache = LocalCache(Project(project).cache_dir, Project(project).tmp_dir)
    add_blob(cache, manifest)
    tree = {"hash": hash_bytes(manifest), "size": len(SHARED) + 5, "kind": "dir"}
    write_lock(project, "p/tree", {"data": tree})
    write_lock(project, "p/single", {"copy.txt": blob})
    obj = project / ".pivot" / "cache" / "objects" / blob["hash"][:2] / blob["hash"][2:]

    for link in ("copy", "hardlink", "symlink"):
        proc = pivot("checkout", "--link", link, "p/tree", rc=1)
        assert "Traceback" not in proc.stderr
        assert tree["hash"] in proc.stderr and "'a.txt'" in proc.stderr, proc.stderr
        assert "the manifest is wrong" in proc.stderr and "damaged" not in proc.stderr
        assert obj.is_file() and not (project / "data").exists()
        assert not list((project / ".pivot" / "cache" / "quarantine").glob("*"))

    pivot("gc")
    assert obj.is_file()
    pivot("checkout", "p/single")
    assert (project / "copy.txt").read_bytes() == SHARED
