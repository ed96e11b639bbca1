"""shared/spec/multi-pipeline-projects.txt: every example, exactly as written there."""

from __future__ import annotations

import json

from spec_projects import PARENT_CHILD, SIBLINGS
from support import write_files


def test_parent_child_run_from_child_directory(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    proc = pivot("run", cwd="analysis")
    assert proc.stdout.index("data_prep/prepare") < proc.stdout.index("analysis/analyze")
    assert (project / "shared/data.csv").read_text() == "id,value\n1,100\n2,200\n3,300\n"
    assert (project / "analysis/report.txt").read_text() == "Processed 3 records\n"
    assert (project / ".pivot/stages/data_prep/prepare.lock").is_file()
    assert (project / ".pivot/stages/analysis/analyze.lock").is_file()
    assert "Every stage is up to date" in pivot("run", cwd="analysis").stdout


def test_parent_pipeline_alone_does_not_pull_in_children(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    proc = pivot("run")
    assert "data_prep/prepare" in proc.stdout and "analysis/analyze" not in proc.stdout
    assert not (project / "analysis/report.txt").exists()


def test_sibling_pattern(project, pivot) -> None:
    write_files(project, SIBLINGS)
    proc = pivot("run", cwd="pipelines/model")
    assert proc.stdout.index("features/compute_features") < proc.stdout.index("model/train_model")
    assert (project / "pipelines/model/predictions.csv").read_text() == (
        "# Model trained on features\nfeature,value\nf1,10\nf2,20\n"
    )


def test_all_from_any_directory(project, pivot) -> None:
    write_files(project, {**PARENT_CHILD, **SIBLINGS})
    (project / "docs").mkdir()
    proc = pivot("run", "--all", cwd="docs")
    for stage in (
        "data_prep/prepare",
        "analysis/analyze",
        "features/compute_features",
        "model/train_model",
    ):
        assert f"ran       {stage}" in proc.stdout
    assert "Every stage is up to date (4 stages" in pivot("run", "--all", cwd="pipelines").stdout


def test_one_lock_per_stage_whatever_the_entry_point(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    pivot("run")
    lock = (project / ".pivot/stages/data_prep/prepare.lock").read_text()
    proc = pivot("run", cwd="analysis")
    assert "skipped   data_prep/prepare" in proc.stdout
    assert "ran       analysis/analyze" in proc.stdout
    pivot("run", "--all")
    assert (project / ".pivot/stages/data_prep/prepare.lock").read_text() == lock
    locks = sorted(p.name for p in (project / ".pivot/stages").rglob("*.lock"))
    assert locks == ["analyze.lock", "prepare.lock"]


def test_status_list_and_dag_show_ids_and_files(project, pivot) -> None:
    write_files(project, {**PARENT_CHILD, **SIBLINGS})
    rows = json.loads(pivot("list", "--json", cwd="analysis").stdout)
    assert [(r["stage"], r["file"]) for r in rows] == [
        ("data_prep/prepare", "pipeline.py"),
        ("analysis/analyze", "analysis/pipeline.py"),
    ]
    status = pivot("status", "--all").stdout
    assert "analysis/analyze" in status and "analysis/pipeline.py" in status
    text = pivot("dag", "--all").stdout
    assert "analysis/analyze  <- data_prep/prepare" in text
    assert '"data_prep/prepare" -> "analysis/analyze"' in pivot("dag", "--all", "--dot").stdout
    assert "flowchart LR" in pivot("dag", "--all", "--mermaid").stdout
