"""`run --watch` refuses what it cannot do before watching anything."""

from __future__ import annotations


def test_watch_without_a_pipeline_is_the_error_run_gives(project, pivot) -> None:
    proc = pivot("run", "--watch", rc=1)
    assert "No pipeline.py or pivot.yaml in" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_watch_refuses_dry_run_and_push(project, pivot) -> None:
    for args in (("--watch", "--dry-run"), ("--watch", "--push")):
        proc = pivot("run", *args, rc=2)
        assert "--watch cannot be combined with --dry-run or --push" in proc.stderr
    proc = pivot("run", "--watch", "--executor", "dask", rc=2)
    assert "--watch runs stages on this machine: not with --executor dask." in proc.stderr
