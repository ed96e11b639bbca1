"""Functions and lambdas passed as params are code the stage runs: editing them re-runs it."""

from __future__ import annotations

import json

from support import COUNTER, executions, write_files

PIPELINE = (
    """
from typing import Annotated

import pivot
from helpers import scale
"""
    + COUNTER
    + """

pipeline = pivot.Pipeline("p")


def compute(params: dict) -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    _count("compute")
    return f"{params['f'](3)} {params['steps'][0]['g'](1)}"


pipeline.register(compute, params={"f": scale, "steps": [{"g": lambda x: x + 1}]})
"""
)


def test_editing_a_function_param_reruns_the_stage(project, pivot) -> None:
    write_files(
        project, {"pipeline.py": PIPELINE, "helpers.py": "def scale(x):\n    return x * 2\n"}
    )
    pivot("run")
    assert (project / "out.txt").read_text() == "6 2"
    lock = json.loads((project / ".pivot/stages/p/compute.lock").read_text())
    assert "func:helpers.scale" in lock["fingerprint"]
    assert " at 0x" not in json.dumps(lock["params"])  # no memory address in the lock

    write_files(project, {"helpers.py": "def scale(x):\n    return x * 5\n"})
    status = pivot("status").stdout
    assert "will run" in status and "code changed: func:helpers.scale" in status
    assert "param changed" not in status
    pivot("run")
    assert (project / "out.txt").read_text() == "15 2"
    assert executions(project) == ["compute", "compute"]
    assert "up to date" in pivot("status").stdout


def test_editing_a_lambda_param_in_a_nested_container_reruns_the_stage(project, pivot) -> None:
    write_files(
        project, {"pipeline.py": PIPELINE, "helpers.py": "def scale(x):\n    return x * 2\n"}
    )
    pivot("run")
    write_files(project, {"pipeline.py": PIPELINE.replace("x + 1", "x + 10")})
    status = pivot("status").stdout
    assert "code changed: func:<lambda>" in status, status
    pivot("run")
    assert (project / "out.txt").read_text() == "6 11"
    assert executions(project) == ["compute", "compute"]
