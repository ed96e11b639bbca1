"""`pivot track`: raw data recorded, committed to git, and brought back in a clone that
lacks it; deps that exist nowhere fail only a stage that must execute."""

from __future__ import annotations

import json

import pytest
from support import PivotCLI, git, write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def clean(
    raw: Annotated[str, pivot.Dep("data/raw.csv", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("clean.txt", pivot.loaders.Text())]:
    return raw.upper()


pipeline.register(clean)
"""


@pytest.fixture
def origin(tmp_path, project, pivot):
    """A project whose raw data is tracked, run, pushed and committed to git."""
    write_files(project, {"pipeline.py": PIPELINE, "data/raw.csv": "a,b\n"})
    git(project, "init", "-q")
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("track", "data/raw.csv")
    pivot("run")
    pivot("push")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tracked")
    return project


def clone(tmp_path, origin, name: str = "clone") -> tuple:
    target = tmp_path / name
    git(tmp_path, "clone", "-q", str(origin), str(target))
    return target, PivotCLI(target)


def test_track_writes_a_deterministic_record_and_keeps_the_data_out_of_git(origin, pivot):
    record = origin / ".pivot" / "tracked" / "data" / "raw.csv.json"
    body = json.loads(record.read_text())
    assert body == {
        "schema": 1,
        "path": "data/raw.csv",
        "hash": body["hash"],
        "size": 4,
        "kind": "file",
    }
    assert record.read_text() == json.dumps(body, indent=2, sort_keys=True) + "\n"
    committed = git(origin, "ls-files").split()
    assert ".pivot/tracked/data/raw.csv.json" in committed
    assert "data/raw.csv" not in committed and "clean.txt" not in committed
    assert "unchanged" in pivot("track", "data/raw.csv").stdout
    assert record.read_text() == json.dumps(body, indent=2, sort_keys=True) + "\n"

    (origin / "data" / "raw.csv").write_text("a,b,c\n")
    status = pivot("status").stdout
    assert "modified" in status and "data/raw.csv" in status and "pivot track" in status
    assert "recorded" in pivot("track", "data/raw.csv").stdout
    assert json.loads(record.read_text())["size"] == 6
    assert "modified" not in pivot("status").stdout


def test_a_clone_without_the_data_gets_status_verify_pull_and_run(tmp_path, origin):
    target, cli = clone(tmp_path, origin)
    assert not (target / "data" / "raw.csv").exists()
    status = cli("status").stdout
    assert "restorable" in status and "p/clean" in status
    assert "missing" in status and "data/raw.csv" in status
    cli("verify")
    cli("pull")
    assert (target / "clean.txt").read_text() == "A,B\n"
    assert (target / "data" / "raw.csv").read_text() == "a,b\n"

    # A stage that must execute in a clone lacking the data gets it from the remote.
    other, cli2 = clone(tmp_path, origin, "other")
    (other / "pipeline.py").write_text(PIPELINE.replace("raw.upper()", "raw.upper() * 2"))
    ran = cli2("run")
    assert "ran" in ran.stdout, ran.stdout + ran.stderr
    assert (other / "clean.txt").read_text() == "A,B\nA,B\n"
    assert (other / "data" / "raw.csv").read_text() == "a,b\n"


def test_push_fetch_and_pull_move_tracked_data_named_as_targets(tmp_path, origin):
    target, cli = clone(tmp_path, origin)
    fetched = cli("fetch", "data/raw.csv").stdout
    assert "1" in fetched
    cli("pull", "data/raw.csv")
    assert (target / "data" / "raw.csv").read_text() == "a,b\n"
    assert not (target / "clean.txt").exists()
    (target / "data" / "raw.csv").unlink()
    cli("checkout", "data/raw.csv")
    assert (target / "data" / "raw.csv").read_text() == "a,b\n"
    assert not (target / "clean.txt").exists()


def test_a_dep_that_exists_nowhere_fails_only_a_stage_that_must_execute(tmp_path, project):
    # Raw data committed nowhere: the lock files still name every output.
    write_files(project, {"pipeline.py": PIPELINE, "data/raw.csv": "a,b\n"})
    pivot = PivotCLI(project)
    git(project, "init", "-q")
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("run")
    pivot("push")
    (project / ".gitignore").write_text("/data/\n/clean.txt\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "untracked raw")
    target, cli = clone(tmp_path, project)

    status = cli("status").stdout
    assert "dep data/raw.csv missing, outputs restorable" in status
    cli("verify")
    cli("fetch")
    cli("pull")
    assert (target / "clean.txt").read_text() == "A,B\n"
    assert "up to date" in cli("run").stdout

    (target / "pipeline.py").write_text(PIPELINE.replace("raw.upper()", "raw.lower()"))
    failed = cli("run", rc=1)
    assert "p/clean" in failed.stderr and "data/raw.csv" in failed.stderr
    assert "pivot track data/raw.csv" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (target / "clean.txt").read_text() == "A,B\n"


def test_a_tracked_folder_is_restored_for_a_stage_reading_a_file_in_it(tmp_path, project):
    write_files(
        project,
        {
            "pipeline.py": PIPELINE.replace("data/raw.csv", "data/in/raw.csv"),
            "data/in/raw.csv": "x\n",
            "data/in/other.csv": "y\n",
        },
    )
    pivot = PivotCLI(project)
    git(project, "init", "-q")
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("track", "data/in")
    assert (project / "data" / ".gitignore").read_text().splitlines()[1] == "/in"
    pivot("run")
    pivot("push")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "folder")
    target, cli = clone(tmp_path, project)
    assert "up to date" in cli("status").stdout or "restorable" in cli("status").stdout
    (target / "pipeline.py").write_text(
        PIPELINE.replace("data/raw.csv", "data/in/raw.csv").replace("raw.upper()", "raw * 3")
    )
    cli("run")
    assert (target / "clean.txt").read_text() == "x\nx\nx\n"
    assert (target / "data" / "in" / "other.csv").read_text() == "y\n"


def test_untrack_removes_the_record_and_its_gitignore_line(project, pivot):
    write_files(project, {"data/raw.csv": "a\n", "data/.gitignore": "*.tmp\n"})
    pivot("track", "data/raw.csv")
    ignore = (project / "data" / ".gitignore").read_text()
    assert ignore.startswith("*.tmp\n") and "/raw.csv" in ignore
    assert "untracked" in pivot("untrack", "data/raw.csv").stdout
    assert not (project / ".pivot" / "tracked" / "data").exists()
    assert (project / "data" / ".gitignore").read_text() == "*.tmp\n"
    assert (project / "data" / "raw.csv").read_text() == "a\n"
    refused = pivot("untrack", "data/raw.csv", rc=1)
    assert "data/raw.csv is not tracked" in refused.stderr


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (".pivot/config.yaml", ".pivot/"),
        (".git/config", ".git folder"),
        ("../outside.txt", "outside the project root"),
        ("nothing.csv", "does not exist"),
        ("clean.txt", "an output of stage p/clean"),
        ("link.csv", "symbolic link"),
    ],
)
def test_bad_paths_are_refused_and_nothing_is_recorded(project, pivot, path, words):
    write_files(project, {"pipeline.py": PIPELINE, "data/raw.csv": "a\n", "clean.txt": "x"})
    git(project, "init", "-q")
    (project / "link.csv").symlink_to(project / "data" / "raw.csv")
    (project.parent / "outside.txt").write_text("o")
    refused = pivot("track", path, rc=1)
    assert words in refused.stderr and "Traceback" not in refused.stderr
    assert not (project / ".pivot" / "tracked").exists()


def test_a_corrupt_record_is_named(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "data/raw.csv": "a\n"})
    pivot("track", "data/raw.csv")
    record = project / ".pivot" / "tracked" / "data" / "raw.csv.json"
    record.write_text(record.read_text().replace('"data/raw.csv"', '"../etc/passwd"'))
    for command in (("status",), ("run",), ("pull", "--all"), ("track", "data/raw.csv")):
        failed = pivot(*command, rc=1)
        assert ".pivot/tracked/data/raw.csv.json" in failed.stderr, command
        assert "Traceback" not in failed.stderr


def _clone_after_the_tracked_folder_changed(tmp_path, project):
    """A project whose stage reads `data/in/raw.csv` of the tracked folder `data/in`, run,
    then the folder changed and tracked again (the stage not run), everything pushed and
    committed; returns a clone without the data and its runner."""
    inside = PIPELINE.replace("data/raw.csv", "data/in/raw.csv")
    write_files(project, {"pipeline.py": inside, "data/in/raw.csv": "x\n", "data/in/o.csv": "y\n"})
    pivot = PivotCLI(project)
    git(project, "init", "-q")
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("track", "data/in")
    pivot("run")
    (project / "data/in/raw.csv").write_text("new\n")
    pivot("track", "data/in")
    pivot("push", "--all")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "folder changed")
    return clone(tmp_path, project)


def test_a_dep_in_a_tracked_folder_resolves_through_a_manifest_on_the_remote(tmp_path, project):
    """In a clone without the data, the folder's manifest is read from the remote: a
    record changed since the lock was written makes the stage stale for `status --remote`,
    `verify` and `run`, and `pull` brings the new data."""
    target, cli = _clone_after_the_tracked_folder_changed(tmp_path, project)

    rows = json.loads(cli("status", "--remote", "--json").stdout)
    row = next(r for r in rows if r.get("stage") == "p/clean")
    assert row["action"] == "run" and row["reasons"] == ["dep changed: data/in/raw.csv"]
    assert "missing" not in row
    problems = cli("verify", "--json", rc=1).stdout
    assert "p/clean is not up to date (dep changed: data/in/raw.csv)" in problems
    cli("pull", "data/in")
    assert (target / "data/in/raw.csv").read_text() == "new\n"
    cli("run")
    assert (target / "clean.txt").read_text() == "NEW\n"

    fresh, again = clone(tmp_path, project, "fresh")  # run alone fetches what it needs
    again("run")
    assert (fresh / "clean.txt").read_text() == "NEW\n"


def test_status_offline_says_not_local_for_a_dep_in_a_tracked_folder_without_its_manifest(
    tmp_path, project
):
    """In a fresh clone, `status` without `--remote` cannot read the manifest of a tracked
    folder it lacks: a stage reading a file in it is `not local`, not a guess from its
    lock; once the manifest is fetched, the real verdict shows."""
    target, cli = _clone_after_the_tracked_folder_changed(tmp_path, project)

    rows = json.loads(cli("status", "--json").stdout)
    row = next(r for r in rows if r.get("stage") == "p/clean")
    assert row["action"] == "not-local"
    assert row["not_local"] == ["data/in/raw.csv"]
    assert row["reasons"] == [
        "dep data/in/raw.csv lies in the tracked folder data/in, whose manifest is not in the "
        "local cache: whether it changed is not known"
    ]
    text = cli("status").stdout
    assert "not local   p/clean" in text
    assert "1 stage, 0 not up to date, 1 not decidable offline." in text
    assert "Every stage is up to date" not in text

    cli("fetch", "data/in")  # the manifest (and data) now local, the workspace untouched
    assert not (target / "data/in").exists()
    rows = json.loads(cli("status", "--json").stdout)
    row = next(r for r in rows if r.get("stage") == "p/clean")
    assert row["action"] == "run" and row["reasons"] == ["dep changed: data/in/raw.csv"]
