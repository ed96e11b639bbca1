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


def _four_pipelines(project) -> None:
    write_files(
        project,
        {
            "data/raw.csv": "a,b\n",
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("data_prep")

def clean(raw: Annotated[str, pivot.Dep("data/raw.csv", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("data_prep/clean.csv", pivot.loaders.Text())]:
    _count("clean")
    return raw.upper()

pipeline.register(clean)
""",
            "train/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("train")

def fit(clean: Annotated[str, pivot.Dep("../data_prep/clean.csv", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("model.txt", pivot.loaders.Text())]:
    _count("fit")
    return clean + "model"

pipeline.register(fit)
""",
            "sweep/pipeline.py": "import pivot\npipeline = pivot.Pipeline('sweep'\n",
        },
    )


def test_a_broken_unrelated_pipeline_is_a_warning(project, pivot) -> None:
    _four_pipelines(project)
    for _ in range(2):  # the first builds the scan's index, the second reads it
        proc = pivot("run", cwd="train")
        assert "Skipping the pipeline sweep/pipeline.py" in proc.stderr
        assert "syntax error" in proc.stderr
    assert (project / "train/model.txt").read_text() == "A,B\nmodel"
    proc = pivot("status", cwd="train")
    assert "sweep/pipeline.py" in proc.stderr
    proc = pivot("run", "--all", rc=1)
    assert "sweep/pipeline.py" in proc.stderr and "syntax error" in proc.stderr
    proc = pivot("status", "sweep/tune", rc=1)
    assert "sweep/pipeline.py" in proc.stderr and "syntax error" in proc.stderr


def test_a_broken_pipeline_that_may_produce_a_missing_dep_fails_the_command(project, pivot) -> None:
    _four_pipelines(project)
    write_files(
        project,
        {
            "report/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("report")

def summarise(scores: Annotated[str, pivot.Dep("../results/scores.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("report.txt", pivot.loaders.Text())]:
    return scores

pipeline.register(summarise)
"""
        },
    )
    proc = pivot("run", cwd="report", rc=1)
    assert "results/scores.txt" in proc.stderr
    assert "may produce it" in proc.stderr and "sweep/pipeline.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def _chain(project) -> None:
    """raw -> data_prep/clean (root) -> train/fit -> report/summarise."""
    _four_pipelines(project)
    (project / "sweep/pipeline.py").unlink()
    write_files(
        project,
        {
            "report/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("report")

def summarise(model: Annotated[str, pivot.Dep("../train/model.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("report.txt", pivot.loaders.Text())]:
    _count("summarise")
    return "report of " + model

pipeline.register(summarise)
"""
        },
    )


def test_outputs_kept_in_the_cache_are_up_to_date(project, pivot) -> None:
    _chain(project)
    pivot("run", cwd="report")
    (project / "data_prep/clean.csv").unlink()  # as in a clone: only the cache has it
    status = pivot("status", cwd="report").stdout
    line = next(x for x in status.splitlines() if "data_prep/clean" in x)
    assert "up to date" in line and "in cache" in line, status
    assert "restorable" not in status and "is missing" not in status
    assert "Every stage is up to date (3 stages)." in status
    plan = pivot("run", "-n", cwd="report").stdout
    line = next(x for x in plan.splitlines() if "data_prep/clean" in x)
    assert "up to date" in line and "in cache" in line and "missing" not in line, plan
    proc = pivot("run", cwd="report")
    assert "Every stage is up to date (3 stages" in proc.stdout
    assert not (project / "data_prep/clean.csv").exists()
    # at the root, data_prep/clean is the target: run would restore it
    assert "restorable" in pivot("status").stdout
    assert executions(project) == ["clean", "fit", "summarise"]


def test_a_relative_directory_remote_is_relative_to_the_project_root(
    project, pivot, tmp_path
) -> None:
    _chain(project)
    added = pivot("remote", "add", "--default", "origin", "../remote-store", cwd="train")
    store = tmp_path / "remote-store"
    assert f"../remote-store ({store}, does not exist)" in added.stdout
    pivot("run", cwd="report")
    pivot("push", "--all")
    assert (store / "index").is_dir()
    listed = pivot("remote", "list").stdout
    assert f"origin\t../remote-store ({store})" in listed
    assert "../remote-store" in (project / ".pivot/config.yaml").read_text()  # as typed
    # a clone placed elsewhere: the same relative url names a folder that is not there
    clone = tmp_path / "elsewhere" / "clone"
    clone.parent.mkdir()
    import shutil

    shutil.copytree(
        project, clone, ignore=shutil.ignore_patterns("cache", "state.db", "*.txt", "*.csv")
    )
    (clone / "data").mkdir(exist_ok=True)
    (clone / "data/raw.csv").write_text("a,b\n")
    missing = tmp_path / "elsewhere" / "remote-store"
    from support import PivotCLI

    cloned = PivotCLI(clone)
    assert f"({missing}, does not exist)" in cloned("remote", "list").stdout
    for command in ("fetch", "pull"):
        proc = cloned(command, rc=1)
        assert f"is the directory {missing}" in proc.stderr and "does not exist" in proc.stderr
    proc = cloned("run", cwd="report")
    assert f"is the directory {missing}" in proc.stderr and "does not exist" in proc.stderr
