"""A folder swapped for a symbolic link after `Project.write_path` checked the path, before
the output is placed (a deterministic hook between the two): nothing is written through
the link, and the error names the path."""

from __future__ import annotations

import os
import pathlib

import pytest

from pivot.cache.checkout import LinkMode
from pivot.cache.hashing import FILE
from pivot.cache.workspace import workspace_of
from pivot.errors import UnsafePath
from pivot.project import Project


@pytest.mark.parametrize("swapped", ["data", "data/inner"])
def test_a_link_swapped_in_after_the_check_is_not_written_through(
    project: pathlib.Path, tmp_path: pathlib.Path, swapped: str
) -> None:
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)  # where the write would land through the link
    (project / "data/inner").mkdir(parents=True)
    blob = tmp_path / "blob.txt"
    blob.write_text("payload")

    class SwapAfterCheck(Project):
        def write_path(self, rel: str, what: str, make_parents: bool = False) -> pathlib.Path:
            dest = super().write_path(rel, what, make_parents)
            (project / swapped).rename(tmp_path / "moved")  # the attacker's move
            os.symlink(outside, project / swapped)
            return dest

    ws = workspace_of(SwapAfterCheck(project))
    try:
        digest, _ = ws.cache.add_file(blob)
        with pytest.raises(UnsafePath) as raised:
            ws.place_output(
                "data/inner/x.txt", {"hash": digest, "kind": FILE}, LinkMode.COPY, "the output"
            )
    finally:
        ws.state.close()
    assert f"'{swapped}'" in str(raised.value) and "data/inner/x.txt" in str(raised.value)
    assert [p for p in outside.rglob("*") if not p.is_dir()] == []
