"""A stage output holding a file whose name is not UTF-8: refused with a clear error that
names the file, nothing recorded, and the next run after a fix works."""

from __future__ import annotations

import os

from support import write_files

PIPELINE = """
import os
import pathlib
from typing import Annotated

import pivot
from pivot.define.loaders import PathOnly

pipeline = pivot.Pipeline("p")

def make() -> Annotated[pathlib.Path, pivot.Out("data", PathOnly())]:
    pathlib.Path("data").mkdir(exist_ok=True)
    pathlib.Path("data", "ok.txt").write_text("fine\\n")
    if os.environ.get("BAD_NAME"):
        pathlib.Path("data", os.fsdecode(b"caf\\xe9.txt")).write_text("latin-1 name\\n")
    return pathlib.Path("data")

pipeline.register(make)
"""


def test_an_output_file_name_that_is_not_utf8_is_refused_by_name(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    proc = pivot("run", rc=1, BAD_NAME="1")
    assert "Traceback" not in proc.stderr
    assert "caf" in proc.stderr and "UTF-8" in proc.stderr
    assert not list((project / ".pivot" / "stages").rglob("*.lock"))
    assert "rename the file" in proc.stderr

    pivot("run")  # the stage no longer writes the name: its output is stored
    assert "up to date" in pivot("run").stdout
    assert (project / "data" / "ok.txt").read_text() == "fine\n"


def test_a_file_with_such_a_name_added_to_a_stored_output_is_an_edit_named(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    bad = project / "data" / os.fsdecode(b"added\xe9.txt")
    bad.write_text("mine\n")
    assert "output data was modified" in pivot("status").stdout
    proc = pivot("run", rc=1)
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr
    assert "data/added" in proc.stderr and "Nothing was replaced" in proc.stderr
    assert bad.read_text() == "mine\n"
    pivot("checkout", "--force")  # the user discards it
    assert not bad.exists()
    assert "up to date" in pivot("run").stdout
