"""Two pipelines whose outputs overlap (one is a folder holding the other) are refused
when loaded, whichever of them is loaded first."""

from __future__ import annotations

import pytest
from support import write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("{name}")

def make() -> Annotated[str, pivot.Out({out!r}, pivot.loaders.Text())]:
    return "x"

pipeline.register(make)
"""


@pytest.mark.parametrize(
    ("out_a", "out_b", "named"),
    [
        ("../data/deep/x.txt", "../data", "data/deep/x.txt"),  # the folder is loaded second
        ("../data", "../data/deep/x.txt", "data"),  # the folder is loaded first
        ("../data/x.txt", "../data/x.txt", "data/x.txt"),  # the same path
    ],
)
def test_overlapping_outputs_of_two_pipelines_are_refused(project, pivot, out_a, out_b, named):
    write_files(
        project,
        {
            "a/pipeline.py": PIPELINE.format(name="a", out=out_a),
            "b/pipeline.py": PIPELINE.format(name="b", out=out_b),
        },
    )
    proc = pivot("run", "--all", rc=1)
    message = proc.stdout + proc.stderr
    assert "Two stages write overlapping outputs" in message
    assert "a/make" in message and "b/make" in message and named in message
    assert "Traceback" not in message
    assert not (project / "data").exists()


def test_outputs_side_by_side_in_one_folder_are_not_an_overlap(project, pivot):
    write_files(
        project,
        {
            "a/pipeline.py": PIPELINE.format(name="a", out="../data/one.txt"),
            "b/pipeline.py": PIPELINE.format(name="b", out="../data/two.txt"),
        },
    )
    pivot("run", "--all")
    assert (project / "data" / "one.txt").read_text() == "x"
    assert (project / "data" / "two.txt").read_text() == "x"
