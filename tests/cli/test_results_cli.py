"""`pivot metrics`, `pivot params` and the param values in `status`, over a real git
history (see results_support): revisions read from git, nothing written to the repo."""

from __future__ import annotations

import json
import shutil

import pytest
from results_support import build_history, git, set_alpha
from support import PivotCLI


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> PivotCLI:
    return PivotCLI(build_history(tmp_path_factory.mktemp("history")))


def _json(pivot: PivotCLI, *args: str, cwd: str | None = None) -> dict:
    return json.loads(pivot(*args, "--json", cwd=cwd).stdout)


def test_metrics_show_in_every_format_from_a_subfolder(history) -> None:
    table = history("metrics", "show", cwd="plots").stdout.splitlines()
    assert table[0].split() == ["Path", "Key", "Value"]
    assert [line.split() for line in table[1:]] == [
        ["metrics.json", "acc", "0.54546"],
        ["metrics.json", "train.loss", "0.01"],
        ["scores.csv", "f1", "0.49091"],
        ["scores.csv", "model", "tiny"],
    ]
    assert _json(history, "metrics", "show")["metrics.json"]["acc"] == {"value": 0.545455}
    md = history("metrics", "show", "--md").stdout.splitlines()
    assert md[:3] == [
        "| Path | Key | Value |",
        "| --- | --- | --- |",
        "| metrics.json | acc | 0.54546 |",
    ]
    csv = history("metrics", "show", "--csv", "--precision", "2").stdout.splitlines()
    assert csv[:2] == ["Path,Key,Value", "metrics.json,acc,0.55"]
    assert git(history.root, "status", "--porcelain") == ""


def test_metrics_diff_between_commits_branches_and_the_workspace(history) -> None:
    old_new = _json(history, "metrics", "diff", "HEAD~2", "HEAD")
    assert old_new["metrics.json"]["acc"] == {"old": 0.52381, "new": 0.545455, "change": 0.021645}
    assert old_new["scores.csv"]["f1"]["old"] == 0.471429
    assert "model" not in old_new["scores.csv"]  # unchanged keys only with -u
    branch = history("metrics", "diff", "experiment").stdout.splitlines()
    assert branch[0].split() == ["Path", "Key", "experiment", "workspace", "Change"]
    assert branch[1].split() == ["metrics.json", "acc", "0.9902", "0.54546", "-0.44474"]
    every = _json(history, "metrics", "diff", "experiment", "-u")
    assert every["scores.csv"]["model"] == {"old": "tiny", "new": "tiny", "change": None}
    same = history("metrics", "diff")  # HEAD vs the workspace: nothing changed
    assert same.stdout == "" and "No changed values to show." in same.stderr
    assert git(history.root, "status", "--porcelain") == ""


def test_params_show_and_diff(history) -> None:
    shown = _json(history, "params", "show")
    assert shown == {
        "train/train": {
            "alpha": {"value": 0.2},
            "optim.lr": {"value": 0.01},
            "optim.name": {"value": "sgd"},
        }
    }
    diff = history("params", "diff", "HEAD~1").stdout.splitlines()
    assert diff[1].split() == ["train/train", "alpha", "0.5", "0.2", "-0.3"]
    assert len(diff) == 2
    branches = _json(history, "params", "diff", "main", "experiment")
    assert branches["train/train"]["alpha"] == {"old": 0.2, "new": 100, "change": 99.8}


def test_a_revision_before_pivot_init_and_one_that_does_not_exist(history) -> None:
    before = history("metrics", "diff", "HEAD~3")
    assert "HEAD~3" in before.stderr and "before the project was initialised" in before.stderr
    assert before.stdout.splitlines()[1].split() == ["metrics.json", "acc", "-", "0.54546", "added"]
    for command in ("metrics", "params"):
        bad = history(command, "diff", "no-such-branch", rc=1)
        assert bad.stdout == ""
        assert "'no-such-branch' is not a git revision" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    option_like = history("metrics", "diff", "--", "--output=x", rc=1)
    assert "'--output=x' is not a git revision" in option_like.stderr
    assert git(history.root, "status", "--porcelain") == ""


def test_status_and_dry_run_show_the_old_and_new_param(history, tmp_path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(history.root, root, symlinks=True)
    pivot = PivotCLI(root)
    set_alpha(root, 7)
    assert "param changed: alpha 0.2 → 7" in pivot("status").stdout
    assert "param changed: alpha 0.2 → 7" in pivot("run", "--dry-run").stdout
    # the diff of the workspace uses the stage definitions as they are now
    assert _json(pivot, "params", "diff")["train/train"]["alpha"]["new"] == 7


def test_outside_git_show_works_and_diff_says_why_not(project, pivot) -> None:
    (project / "pipeline.py").write_text(
        "from typing import Annotated\nimport pivot\npipeline = pivot.Pipeline('p')\n"
        "def s() -> Annotated[dict, pivot.Metric('m.yaml')]:\n    return {'a': 1}\n"
        "pipeline.register(s)\n"
    )
    pivot("run", "-q")
    assert pivot("metrics", "show").stdout.splitlines()[1].split() == ["m.yaml", "a", "1"]
    err = pivot("metrics", "diff", rc=1).stderr
    assert "not in a git repository" in err and "Traceback" not in err


def test_lock_files_from_before_metrics_read_values_from_the_cache(history, tmp_path) -> None:
    root = tmp_path / "old"
    shutil.copytree(history.root, root, symlinks=True)
    lock_file = root / ".pivot" / "stages" / "train" / "train.lock"
    body = json.loads(lock_file.read_text())
    del body["metrics"]  # as written by a Pivot without metrics
    lock_file.write_text(json.dumps(body))
    git(root, "commit", "-qam", "old-style lock")
    pivot = PivotCLI(root)
    assert _json(pivot, "metrics", "diff", "HEAD", "HEAD~1", "-u")["metrics.json"]["acc"] == {
        "old": 0.545455,
        "new": 0.545455,
        "change": 0.0,
    }
    shutil.rmtree(root / ".pivot" / "cache")
    gone = pivot("metrics", "diff", "HEAD", "HEAD~1")
    assert "metrics.json in HEAD: its lock file records no values" in gone.stderr
    assert gone.stdout.splitlines()[1].split() == ["metrics.json", "acc", "-", "0.54546", "added"]
