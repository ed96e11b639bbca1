"""`pull --all` and `checkout --all` in a clone that lacks a raw input: the outputs made
from it still come back (every pipeline is loaded, its graph is not needed)."""

from __future__ import annotations

import shutil

from support import PivotCLI, write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def clean(
    raw: Annotated[str, pivot.Dep("raw.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("clean.txt", pivot.loaders.Text())]:
    return raw.upper()


pipeline.register(clean)
"""


def test_pull_all_restores_outputs_of_a_raw_input_the_clone_lacks(tmp_path, project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "raw.txt": "abc\n"})
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("run")
    pivot("push", "--all")

    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(project / "pipeline.py", clone / "pipeline.py")
    shutil.copytree(project / ".pivot" / "stages", clone / ".pivot" / "stages")
    shutil.copy(project / ".pivot" / "config.yaml", clone / ".pivot" / "config.yaml")
    cli = PivotCLI(clone)
    pulled = cli("pull", "--all")
    assert (clone / "clean.txt").read_text() == "ABC\n", pulled.stdout + pulled.stderr
    assert not (clone / "raw.txt").exists()

    (clone / "clean.txt").unlink()
    cli("checkout", "--all")
    assert (clone / "clean.txt").read_text() == "ABC\n"
