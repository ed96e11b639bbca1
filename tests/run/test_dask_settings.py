"""Choosing the Dask executor: what is refused before any cluster is contacted, and a
run with nothing to execute never importing Dask."""

from __future__ import annotations

from spec_projects import PARENT_CHILD
from support import imported_heavy_modules, write_files

ONE_STAGE = {
    "pipeline.py": """
    from typing import Annotated
    import pivot
    from pivot import Out, loaders

    p = pivot.Pipeline("one")

    def make() -> Annotated[str, Out("made.txt", loaders.Text())]:
        return "made"

    p.register(make{extra})
    """
}


def _one_stage(project, extra: str = "") -> None:
    write_files(project, {k: v.replace("{extra}", extra) for k, v in ONE_STAGE.items()})


def test_bad_executor_settings_are_named(project, pivot) -> None:
    _one_stage(project)
    config = project / ".pivot" / "config.yaml"
    config.write_text("executor: cluster\n")
    result = pivot("run", rc=1)
    assert str(config) in result.stderr and "`executor` must be one of local, dask" in result.stderr
    config.write_text("executor: dask\ndask:\n  retries: lots\n")
    result = pivot("run", rc=1)
    assert "`dask.retries` must be a whole number" in result.stderr
    assert not (project / "made.txt").exists()


def test_dask_needs_a_scheduler_and_a_remote(project, pivot, tmp_path) -> None:
    _one_stage(project)
    result = pivot("run", "--executor", "dask", rc=1)
    assert "needs the scheduler's address" in result.stderr
    result = pivot("run", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1", rc=1)
    assert "needs a remote" in result.stderr and "this project has none" in result.stderr
    pivot("remote", "add", "--default", "here", str(tmp_path / "remote"))
    result = pivot(
        "run", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1", "--no-remote", rc=1
    )
    assert "--no-remote cannot be used with the Dask executor" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "made.txt").exists()


def test_invalid_resources_are_refused_when_the_pipeline_loads(project, pivot) -> None:
    _one_stage(project, ', resources={"GPU": -1}')
    result = pivot("run", rc=1)
    assert (
        "one/make" in result.stderr and "resource 'GPU' must be a positive number" in result.stderr
    )
    _one_stage(project, ', resources=["GPU"]')
    assert "resources must be a mapping" in pivot("run", rc=1).stderr


def test_local_executor_ignores_resources(project, pivot) -> None:
    _one_stage(project, ', resources={"GPU": 4, "memory": "8GB"}')
    pivot("run", "--executor", "local")
    assert (project / "made.txt").read_text() == "made"


def test_a_dask_run_with_nothing_to_execute_does_not_import_dask(project, pivot, tmp_path):
    write_files(project, PARENT_CHILD)
    pivot("remote", "add", "--default", "here", str(tmp_path / "remote"))
    pivot("run", cwd="analysis")
    args = ("run", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1")
    heavy = imported_heavy_modules(project / "analysis", *args)
    assert "dask" not in heavy and "distributed" not in heavy
