"""An edit that exists nowhere else is never discarded: checkout, pull and a restore in
run refuse to overwrite it (naming it) unless --force; a re-running stage replaces its
own outputs."""

from __future__ import annotations

from support import PivotCLI, word_pipeline, write_files

PIPELINE = word_pipeline("one", 1)


def test_checkout_pull_and_run_refuse_then_force_discards(tmp_path, project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "data/raw.csv": "raw\n"})
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("run")
    pivot("track", "data/raw.csv")
    pivot("push", "--all")
    (project / "out.txt").write_text("my edit")
    (project / "data" / "raw.csv").write_text("my raw edit")

    for command in (("checkout", "--all"), ("pull", "--all"), ("run",)):
        refused = pivot(*command, rc=1)
        assert "out.txt" in refused.stderr and "--force" in refused.stderr, command
        assert "Traceback" not in refused.stderr
        assert (project / "out.txt").read_text() == "my edit"
    refused = pivot("checkout", "data/raw.csv", rc=1)
    assert "data/raw.csv" in refused.stderr
    assert (project / "data" / "raw.csv").read_text() == "my raw edit"

    pivot("pull", "--all", "--force")
    assert (project / "out.txt").read_text() == "one"
    assert (project / "data" / "raw.csv").read_text() == "raw\n"


def test_content_in_the_cache_is_replaced_without_asking(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    (project / "pipeline.py").write_text(word_pipeline("two", 1))
    pivot("run")
    (project / "pipeline.py").write_text(PIPELINE)
    assert "restored" in pivot("run").stdout  # "two" is in the cache: nothing is lost
    assert (project / "out.txt").read_text() == "one"


def test_a_stage_that_reruns_replaces_its_edited_output(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    (project / "out.txt").write_text("my edit")
    (project / "pipeline.py").write_text(word_pipeline("three", 1))
    assert "ran" in pivot("run").stdout
    assert (project / "out.txt").read_text() == "three"


def test_an_edited_folder_output_names_the_edited_files(tmp_path, project):
    write_files(
        project,
        {
            "pipeline.py": """
from typing import Annotated
import pathlib
import pivot

pipeline = pivot.Pipeline("p")


def make() -> Annotated[pathlib.Path, pivot.Out("shards", pivot.loaders.PathOnly())]:
    for i in range(3):
        pathlib.Path("shards").mkdir(exist_ok=True)
        pathlib.Path(f"shards/{i}.txt").write_text(str(i))
    return pathlib.Path("shards")


pipeline.register(make)
"""
        },
    )
    pivot = PivotCLI(project)
    pivot("run")
    (project / "shards" / "1.txt").write_text("edit")
    refused = pivot("checkout", rc=1)
    assert "shards/1.txt" in refused.stderr and "shards/0.txt" not in refused.stderr
