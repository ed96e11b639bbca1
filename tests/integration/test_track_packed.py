"""`pivot track` of a folder stores its small files in local packs (one file per pack in
the cache instead of one per file), its large ones loose; either way the data comes back
byte for byte, with its modes, by checkout, after gc, and through a remote into a clone."""

from __future__ import annotations

import json
import os
import shutil

from support import PivotCLI, git, write_files

from pivot.cache.folder_packs import PACK_FILE_MAX

FILES = {f"data/raw/part{i:03d}.csv": f"{i},{'x' * (i % 7)}\n" for i in range(150)}
PIPELINE = """
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def count(
    raw: Annotated[pathlib.Path, pivot.Dep("data/raw", pivot.loaders.PathOnly())],
) -> Annotated[str, pivot.Out("count.txt", pivot.loaders.Text())]:
    return str(sum(1 for p in raw.rglob("*") if p.is_file()))


pipeline.register(count)
"""


def contents(folder) -> dict[str, tuple[bytes, bool]]:
    """Each file under `folder`: its bytes and whether it is executable."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            found[rel] = (path.read_bytes(), os.access(path, os.X_OK))
    return found


def cache_files(project) -> dict[str, int]:
    """How many files the cache holds as loose objects and as local packs."""
    cache = project / ".pivot" / "cache"
    loose = sum(1 for p in (cache / "objects").rglob("*") if p.is_file())
    packs = sum(1 for p in (cache / "packs").glob("*.pack")) if (cache / "packs").is_dir() else 0
    return {"loose": loose, "packs": packs}


def test_a_tracked_folder_round_trips_through_packs_gc_and_a_clone(
    tmp_path, project, pivot
) -> None:
    write_files(project, {**FILES, "data/raw/sub/empty.txt": "", "pipeline.py": PIPELINE})
    big = project / "data/raw/big.bin"
    big.write_bytes(os.urandom(PACK_FILE_MAX + 1))
    tool = project / "data/raw/sub/run.sh"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    before = contents(project / "data/raw")

    said = pivot("track", "data/raw").stdout
    assert said.startswith("recorded  data/raw  (dir, ")
    # the big file and the folder's manifest are loose; the 152 small files one pack
    assert cache_files(project) == {"loose": 2, "packs": 1}
    rows = json.loads(pivot("status", "--json").stdout)
    assert [r for r in rows if "tracked" in r] == []  # the data is its record's

    pivot("gc")
    for link in ("copy", "hardlink", "symlink"):
        shutil.rmtree(project / "data/raw")
        pivot("checkout", "data/raw", "--link", link)
        assert contents(project / "data/raw") == before, link

    git(project, "init", "-q")
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("push", "data/raw")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tracked")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    PivotCLI(clone)("pull", "data/raw")
    assert contents(clone / "data/raw") == before
    PivotCLI(clone)("run")
    assert (clone / "count.txt").read_text() == str(len(before))


def test_tracking_again_after_one_file_changed_adds_only_that_file(project, pivot) -> None:
    write_files(project, FILES)
    pivot("track", "data/raw")
    (project / "data/raw/part007.csv").write_text("changed\n")
    assert "recorded  data/raw" in pivot("track", "data/raw").stdout
    assert cache_files(project) == {"loose": 2, "packs": 2}  # two manifests; a 1-blob pack
    shutil.rmtree(project / "data/raw")
    pivot("checkout", "data/raw")
    assert (project / "data/raw/part007.csv").read_text() == "changed\n"
    assert (project / "data/raw/part008.csv").read_text() == FILES["data/raw/part008.csv"]
