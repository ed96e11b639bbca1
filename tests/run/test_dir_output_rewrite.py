"""A directory output is hashed file by file through the stat cache: a file rewritten
in place deep inside it (same size, same mtime, same inode) is still noticed."""

from __future__ import annotations

from support import executions, rewrite_keeping_mtime, write_files

PIPELINE = """
import pathlib
from typing import Annotated

import pivot
from pivot.define.loaders import PathOnly

pipeline = pivot.Pipeline("p")

def make() -> Annotated[pathlib.Path, pivot.Out("data", PathOnly())]:
    with open("executions.log", "a") as log:
        log.write("make\\n")
    for sub in ("a", "a/deep", "b"):
        pathlib.Path("data", sub).mkdir(parents=True, exist_ok=True)
        pathlib.Path("data", sub, "f.txt").write_text(f"file in {sub}\\n")
    return pathlib.Path("data")

pipeline.register(make)
"""


def test_a_same_size_rewrite_deep_in_a_directory_output_is_noticed(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    assert "up to date" in pivot("run").stdout
    target = project / "data" / "a" / "deep" / "f.txt"
    rewrite_keeping_mtime(target, "FILE IN A/DEEP\n")
    # Noticed: the edit exists nowhere else, so run refuses to replace it, naming the file.
    proc = pivot("run", rc=1)
    assert "data/a/deep/f.txt. Nothing was replaced." in proc.stderr
    assert target.read_text() == "FILE IN A/DEEP\n"
    pivot("checkout", "--force")  # the user discards the edit: put back from the cache
    assert target.read_text() == "file in a/deep\n"
    assert (project / "data" / "b" / "f.txt").read_text() == "file in b\n"
    assert "up to date" in pivot("run").stdout
    assert executions(project) == ["make"]
