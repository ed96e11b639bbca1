"""What a real multi-pipeline project trips over (issue 17): helpers at the project root,
a broken unrelated pipeline, outputs kept in the cache, relative remotes, CLI consistency."""

from __future__ import annotations

from support import COUNTER, executions, write_files

HEADER = (
    """
import pathlib
from typing import Annotated, TypedDict

import pivot
"""
    + COUNTER
)


def test_child_pipeline_imports_project_helpers_when_loading_and_running(project, pivot) -> None:
    write_files(
        project,
        {
            "lib/__init__.py": "",
            "lib/features.py": "def design_matrix(x):\n    return x.upper()\n",
            "lib/late.py": "SUFFIX = '!'\n",
            "train/pipeline.py": HEADER
            + """
from lib.features import design_matrix

pipeline = pivot.Pipeline("train")

def fit() -> Annotated[str, pivot.Out("model.txt", pivot.loaders.Text())]:
    from lib.late import SUFFIX
    _count("fit")
    return design_matrix("abc") + SUFFIX

pipeline.register(fit)
""",
        },
    )
    pivot("run", cwd="train")
    assert (project / "train/model.txt").read_text() == "ABC!"
    assert pivot("status", cwd="train").stdout.count("up to date") >= 1
    # the fingerprint follows the helpers, both the imported one and the lazy one
    (project / "lib/features.py").write_text("def design_matrix(x):\n    return x.lower()\n")
    assert "code changed" in pivot("status", cwd="train").stdout
    pivot("run", cwd="train")
    assert (project / "train/model.txt").read_text() == "abc!"
    (project / "lib/late.py").write_text("SUFFIX = '?'\n")
    pivot("run", cwd="train")
    assert (project / "train/model.txt").read_text() == "abc?"
    assert executions(project) == ["fit", "fit", "fit"]


def test_the_pipelines_own_folder_wins_over_the_project_root(project, pivot) -> None:
    write_files(
        project,
        {
            "utils.py": "VALUE = 'root'\n",
            "child/utils.py": "VALUE = 'child'\n",
            "child/pipeline.py": HEADER
            + """
import utils

pipeline = pivot.Pipeline("child")

def stage() -> Annotated[str, pivot.Out("value.txt", pivot.loaders.Text())]:
    return utils.VALUE

pipeline.register(stage)
""",
        },
    )
    pivot("run", cwd="child")
    assert (project / "child/value.txt").read_text() == "child"
