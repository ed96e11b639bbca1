"""Outputs and tracked data are kept out of git: Pivot's lines in the `.gitignore` next
to each path, a user's lines never touched, lines dropped when the path goes away."""

from __future__ import annotations

import subprocess

from support import PivotCLI, write_files

from pivot.gitignore import BEGIN, END

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out/a.txt", pivot.loaders.Text())]:
    return "a"


def other() -> Annotated[str, pivot.Out("out/b[1].txt", pivot.loaders.Text())]:
    return "b"


pipeline.register(make)
pipeline.register(other)
"""


def git_untracked(root) -> list[str]:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(line[3:] for line in out.splitlines())


def test_init_says_so(tmp_path):
    (tmp_path / "p").mkdir()
    said = PivotCLI(tmp_path / "p")("init").stdout
    assert ".gitignore" in said and "gitignore: false" in said


def test_outputs_are_ignored_user_lines_kept_and_removed_stages_pruned(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "out/.gitignore": "# mine\n*.log\n"})
    pivot("run")
    ignore = (project / "out" / ".gitignore").read_text()
    assert ignore == f"# mine\n*.log\n{BEGIN}\n/a.txt\n/b\\[1].txt\n{END}\n"
    untracked = git_untracked(project)
    assert "out/a.txt" not in untracked and "out/b[1].txt" not in untracked
    assert "out/.gitignore" in untracked

    (project / "out" / ".gitignore").write_text(ignore + "/mine.txt\n")
    (project / "pipeline.py").write_text(PIPELINE.replace("pipeline.register(other)\n", ""))
    pivot("run", "--all")
    assert (project / "out" / ".gitignore").read_text() == (
        f"# mine\n*.log\n{BEGIN}\n/a.txt\n{END}\n/mine.txt\n"
    )


def test_a_block_left_empty_goes_with_its_file(project, pivot):
    write_files(project, {"data/raw.csv": "x\n"})
    pivot("track", "data/raw.csv")
    assert (project / "data" / ".gitignore").is_file()
    pivot("untrack", "data/raw.csv")
    assert not (project / "data" / ".gitignore").exists()


def test_the_config_switch_turns_it_off(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "data/raw.csv": "x\n"})
    (project / ".pivot" / "config.yaml").write_text("gitignore: false\n")
    pivot("run")
    pivot("track", "data/raw.csv")
    assert not (project / "out" / ".gitignore").exists()
    assert not (project / "data" / ".gitignore").exists()
    (project / ".pivot" / "config.yaml").write_text("gitignore: maybe\n")
    refused = pivot("run", "-f", rc=1)
    assert "gitignore" in refused.stderr and "true or false" in refused.stderr
