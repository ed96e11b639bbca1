"""The multi-pipeline project examples of the spec (`spec_projects.py`), each run as the
spec says: what runs from which directory, the lock files, and what `list`, `status` and
`dag` show."""

from __future__ import annotations

import json
import re

from spec_projects import PARENT_CHILD, SIBLINGS
from support import write_files


def lines(stdout: str) -> list[str]:
    """The lines of a command's output with column padding collapsed and times as `T`."""
    return [re.sub(r"\b\d+\.\d+s\b", "T", " ".join(line.split())) for line in stdout.splitlines()]


def test_parent_child_run_from_child_directory(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    proc = pivot("run", cwd="analysis")
    assert lines(proc.stdout) == [
        "ran data_prep/prepare T",
        "ran analysis/analyze T",
        "2 stages: 2 ran, 0 restored, 0 up to date in T.",
    ]
    assert (project / "shared/data.csv").read_text() == "id,value\n1,100\n2,200\n3,300\n"
    assert (project / "analysis/report.txt").read_text() == "Processed 3 records\n"
    assert (project / ".pivot/stages/data_prep/prepare.lock").is_file()
    assert (project / ".pivot/stages/analysis/analyze.lock").is_file()
    assert lines(pivot("run", cwd="analysis").stdout) == [
        "skipped data_prep/prepare",
        "skipped analysis/analyze",
        "Every stage is up to date (2 stages, T).",
    ]


def test_parent_pipeline_alone_does_not_pull_in_children(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    proc = pivot("run")
    assert lines(proc.stdout) == [
        "ran data_prep/prepare T",
        "1 stage: 1 ran, 0 restored, 0 up to date in T.",
    ]
    assert not (project / "analysis/report.txt").exists()


def test_sibling_pattern(project, pivot) -> None:
    write_files(project, SIBLINGS)
    proc = pivot("run", cwd="pipelines/model")
    assert lines(proc.stdout) == [
        "ran features/compute_features T",
        "ran model/train_model T",
        "2 stages: 2 ran, 0 restored, 0 up to date in T.",
    ]
    assert (project / "pipelines/model/predictions.csv").read_text() == (
        "# Model trained on features\nfeature,value\nf1,10\nf2,20\n"
    )


def test_all_from_any_directory(project, pivot) -> None:
    write_files(project, {**PARENT_CHILD, **SIBLINGS})
    (project / "docs").mkdir()
    ran = lines(pivot("run", "--all", cwd="docs").stdout)
    # The two chains run side by side: each in order, interleaved in any way.
    assert ran.index("ran data_prep/prepare T") < ran.index("ran analysis/analyze T")
    assert ran.index("ran features/compute_features T") < ran.index("ran model/train_model T")
    assert sorted(ran[:4]) == [
        "ran analysis/analyze T",
        "ran data_prep/prepare T",
        "ran features/compute_features T",
        "ran model/train_model T",
    ]
    assert ran[4:] == ["4 stages: 4 ran, 0 restored, 0 up to date in T."]
    again = lines(pivot("run", "--all", cwd="pipelines").stdout)
    assert again[-1] == "Every stage is up to date (4 stages, T).", again
    assert sorted(again[:-1]) == [
        "skipped analysis/analyze",
        "skipped data_prep/prepare",
        "skipped features/compute_features",
        "skipped model/train_model",
    ]


def test_one_lock_per_stage_whatever_the_entry_point(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    pivot("run")
    lock = (project / ".pivot/stages/data_prep/prepare.lock").read_text()
    proc = pivot("run", cwd="analysis")
    assert lines(proc.stdout) == [
        "skipped data_prep/prepare",
        "ran analysis/analyze T",
        "2 stages: 1 ran, 0 restored, 1 up to date in T.",
    ]
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
    assert pivot("status", "--all").stdout.splitlines() == [
        "  will run    data_prep/prepare                        pipeline.py",
        "      - never ran (no lock file)",
        "  will run    features/compute_features                pipelines/features/pipeline.py",
        "      - never ran (no lock file)",
        "  will run    analysis/analyze                         analysis/pipeline.py",
        "      - upstream data_prep/prepare will run",
        "  will run    model/train_model                        pipelines/model/pipeline.py",
        "      - upstream features/compute_features will run",
        "4 stages, 4 not up to date.",
    ]
    assert pivot("dag", "--all").stdout == (
        "data_prep  (pipeline.py)\n"
        "  data_prep/prepare\n"
        "features  (pipelines/features/pipeline.py)\n"
        "  features/compute_features\n"
        "analysis  (analysis/pipeline.py)\n"
        "  analysis/analyze  <- data_prep/prepare\n"
        "model  (pipelines/model/pipeline.py)\n"
        "  model/train_model  <- features/compute_features\n"
    )
    assert pivot("dag", "--all", "--dot").stdout == (
        "digraph pivot {\n"
        "  rankdir=LR;\n"
        "  subgraph cluster_0 {\n"
        '    label="data_prep (pipeline.py)";\n'
        '    "data_prep/prepare";\n'
        "  }\n"
        "  subgraph cluster_1 {\n"
        '    label="features (pipelines/features/pipeline.py)";\n'
        '    "features/compute_features";\n'
        "  }\n"
        "  subgraph cluster_2 {\n"
        '    label="analysis (analysis/pipeline.py)";\n'
        '    "analysis/analyze";\n'
        "  }\n"
        "  subgraph cluster_3 {\n"
        '    label="model (pipelines/model/pipeline.py)";\n'
        '    "model/train_model";\n'
        "  }\n"
        '  "data_prep/prepare" -> "analysis/analyze" [label="shared/data.csv"];\n'
        '  "features/compute_features" -> "model/train_model" '
        '[label="pipelines/features/output.csv"];\n'
        "}\n"
    )
    assert pivot("dag", "--all", "--mermaid").stdout == (
        "flowchart LR\n"
        '  subgraph s0_group ["data_prep (pipeline.py)"]\n'
        '    s0["data_prep/prepare"]\n'
        "  end\n"
        '  subgraph s1_group ["features (pipelines/features/pipeline.py)"]\n'
        '    s1["features/compute_features"]\n'
        "  end\n"
        '  subgraph s2_group ["analysis (analysis/pipeline.py)"]\n'
        '    s2["analysis/analyze"]\n'
        "  end\n"
        '  subgraph s3_group ["model (pipelines/model/pipeline.py)"]\n'
        '    s3["model/train_model"]\n'
        "  end\n"
        "  s0 --> s2\n"
        "  s1 --> s3\n"
    )
