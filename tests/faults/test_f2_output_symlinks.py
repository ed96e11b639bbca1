"""Symbolic links a stage leaves inside a directory output: one pointing outside the
project would store (and push) that file's content, one pointing to nothing used to fail
the stage with Pivot's own traceback. Both fail the stage with a message naming the output
and the link; a link to a project file is stored as that file's content."""

from __future__ import annotations

import pytest
from support import write_files

PIPELINE = """
import os
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def make() -> Annotated[pathlib.Path, pivot.Out("out", pivot.loaders.PathOnly())]:
    os.makedirs("out/sub")
    pathlib.Path("out/a.txt").write_text("a\\n")
    os.symlink(os.environ["LINK_TARGET"], "out/sub/link")
    return pathlib.Path("out")

pipeline.register(make)
"""


@pytest.mark.parametrize("kind", ["outside", "dangling"])
def test_a_bad_link_in_a_directory_output_fails_the_stage_clearly(project, pivot, tmp_path, kind):
    outside = tmp_path / "outside.txt"
    outside.write_text("private key\n")
    target = str(outside) if kind == "outside" else str(project / "gone.txt")
    write_files(project, {"pipeline.py": PIPELINE})
    proc = pivot("run", rc=1, LINK_TARGET=target)
    assert "Traceback" not in proc.stderr and "FileNotFoundError" not in proc.stderr
    assert "p/make" in proc.stderr and "out/sub/link" in proc.stderr, proc.stderr
    assert ("outside the project" if kind == "outside" else "points to nothing") in proc.stderr
    assert not (project / ".pivot" / "stages" / "p" / "make.lock").exists()
    stored = [p.read_bytes() for p in (project / ".pivot" / "cache").rglob("objects/*/*")]
    assert b"private key\n" not in stored


def test_a_link_to_a_project_file_is_stored_as_its_content(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "shared.txt": "shared\n"})
    pivot("run", LINK_TARGET=str(project / "shared.txt"))
    link = project / "out" / "sub" / "link"
    link.unlink()
    pivot("checkout")
    assert not link.is_symlink() and link.read_text() == "shared\n"


def test_a_dangling_link_in_a_directory_dep_is_named(project, pivot):
    write_files(
        project,
        {
            "pipeline.py": PIPELINE.replace(
                "def make()",
                "def make(d: Annotated[pathlib.Path, pivot.Dep('data', pivot.loaders.PathOnly())])",
            ),
            "data/x.txt": "x\n",
        },
    )
    (project / "data" / "broken").symlink_to(project / "nothing")
    proc = pivot("status", rc=1)
    assert "Traceback" not in proc.stderr and "data/broken" in proc.stderr, proc.stderr
