"""A folder beside the project whose name starts with the project's (`proj` and `proj2`) is
not part of it: its modules stay imported once across pipeline loads, like any library."""

from __future__ import annotations

import os
import pathlib

from support import PYTHONPATH, PivotCLI, write_files

PIPELINE = """
from typing import Annotated

import pivot
import shared

pipeline = pivot.Pipeline("{name}")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return shared.VALUE


pipeline.register(make)
"""


def test_a_sibling_folder_module_is_not_forgotten_between_pipelines(
    project: pathlib.Path, pivot: PivotCLI
) -> None:
    sibling = project.parent / (project.name + "2")
    assert str(sibling).startswith(str(project))
    write_files(
        sibling,
        {
            "shared.py": """
            import pathlib
            with open(pathlib.Path(__file__).with_name("imports.log"), "a") as log:
                log.write("imported\\n")
            VALUE = "from the sibling"
            """
        },
    )
    write_files(
        project,
        {"a/pipeline.py": PIPELINE.format(name="a"), "b/pipeline.py": PIPELINE.format(name="b")},
    )
    path = os.pathsep.join((PYTHONPATH, str(sibling)))
    out = pivot("status", "--all", PYTHONPATH=path).stdout
    assert "a/make" in out and "b/make" in out
    assert (sibling / "imports.log").read_text().split() == ["imported"]
