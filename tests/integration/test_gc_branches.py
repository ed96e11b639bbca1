"""`pivot gc` never deletes what another local branch or tag needs (git is read), and
says which objects it removes exist on no remote."""

from __future__ import annotations

from support import PivotCLI, git, word_pipeline, write_files

PIPELINE = word_pipeline("main")


def commit_word(project, pivot, word: str) -> None:
    (project / "pipeline.py").write_text(word_pipeline(word))
    pivot("run")
    git(project, "add", "-A")
    git(project, "commit", "-qm", word)


def test_gc_keeps_branches_and_tags_and_workspace_narrows_it(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE, "data/raw.csv": "raw\n"})
    git(project, "init", "-q", "-b", "main")
    commit_word(project, pivot, "main")
    git(project, "checkout", "-qb", "exp")
    pivot("track", "data/raw.csv")
    commit_word(project, pivot, "exp")
    git(project, "checkout", "-q", "-b", "old")
    commit_word(project, pivot, "old")
    git(project, "tag", "v1")
    git(project, "checkout", "-q", "main")
    git(project, "branch", "-D", "old")
    pivot("checkout", "--force")

    kept = pivot("gc")
    assert "Removed 0 object(s)" in kept.stdout, kept.stdout
    git(project, "checkout", "-q", "exp")
    pivot("checkout")  # exp's output and tracked data survived the gc on main
    assert (project / "out.txt").read_text() == "exp" * 100
    git(project, "checkout", "-q", "main")
    pivot("checkout")

    dry = pivot("gc", "-n", "--workspace")
    assert "Would remove 3 object(s)" in dry.stdout, dry.stdout
    assert "no configured remote holds" in dry.stderr and "3 object(s)" in dry.stderr
    assert pivot("gc", "-n", "--workspace", "--json").stdout.count('"unpushed_removed": 3')

    git(project, "tag", "-d", "v1")  # `old` is now in no commit of any ref
    assert "Would remove 1 object(s)" in pivot("gc", "-n").stdout
    commit_word(project, pivot, "main2")  # `main` is now only in main's history
    assert "Would remove 2 object(s)" in pivot("gc", "-n").stdout
    assert "Would remove 1 object(s)" in pivot("gc", "-n", "--all-commits").stdout

    pivot("gc", "--workspace")
    git(project, "checkout", "-q", "exp")
    lost = pivot("checkout", rc=1)
    assert "not in the local cache" in lost.stderr


def test_a_damaged_lock_on_a_branch_stops_gc_naming_it(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE})
    git(project, "init", "-q", "-b", "main")
    commit_word(project, pivot, "main")
    git(project, "checkout", "-qb", "bad")
    (project / ".pivot" / "stages" / "p" / "make.lock").write_text("{not json")
    git(project, "commit", "-qam", "bad")
    git(project, "checkout", "-q", "main")
    refused = pivot("gc", rc=1)
    assert ".pivot/stages/p/make.lock" in refused.stderr and "Traceback" not in refused.stderr
    assert "Removed" not in refused.stdout


def test_outside_git_only_the_workspace_is_read(project, pivot):
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    done = pivot("gc")
    assert "not in a git repository" in done.stderr


def test_a_sha256_repository_in_a_subfolder_keeps_its_branches(tmp_path):
    """Tree objects are parsed by Pivot: 32-byte ids, and the project below the top."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main", "--object-format=sha256")
    project = repo / "sub"
    project.mkdir()
    pivot = PivotCLI(project)
    pivot("init")
    write_files(project, {"pipeline.py": PIPELINE})
    commit_word(project, pivot, "main")
    git(project, "checkout", "-qb", "exp")
    commit_word(project, pivot, "exp")
    git(project, "checkout", "-q", "main")
    pivot("checkout", "--force")
    assert "Would remove 0 object(s)" in pivot("gc", "-n").stdout
    assert "Would remove 1 object(s)" in pivot("gc", "-n", "--workspace").stdout
