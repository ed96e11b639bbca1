"""Pivot's `.gitignore` line for a path goes when no stage or tracked record owns the path
any more, after `run` of any scope, `checkout`, `track` and `untrack`; a path another
pipeline (not loaded by the command) may still produce keeps its line, and a user's lines
are never touched. Checked with real git."""

from __future__ import annotations

import subprocess

from support import git, write_files

from pivot.gitignore import BEGIN, END

STAGE = """
def {name}() -> Annotated[str, pivot.Out("{out}", pivot.loaders.Text())]:
    return "{name}"


pipeline.register({name})
"""


def pipeline(name: str, stages: dict[str, str]) -> str:
    head = f"from typing import Annotated\n\nimport pivot\n\npipeline = pivot.Pipeline({name!r})\n"
    return head + "".join(STAGE.format(name=n, out=o) for n, o in stages.items())


def untracked(root) -> list[str]:
    """What `git status` lists as untracked (every file, ignored ones left out)."""
    out = git(root, "status", "--porcelain", "--untracked-files=all")
    return sorted(line[3:] for line in out.splitlines() if line.startswith("?? "))


def ignored(root, path: str) -> bool:
    found = subprocess.run(["git", "check-ignore", "-q", path], cwd=root, check=False)
    return found.returncode == 0


def block(root, folder: str) -> list[str]:
    """Pivot's lines in the `.gitignore` of `folder`."""
    lines = (root / folder / ".gitignore").read_text().splitlines()
    return lines[lines.index(BEGIN) + 1 : lines.index(END)] if BEGIN in lines else []


def _two_pipelines_sharing_out(project) -> None:
    """A git project whose pipelines a (stages one, two) and b (three) write into `out/`,
    where the user's `.gitignore` already has a line of its own."""
    git(project, "init", "-q")
    write_files(
        project,
        {
            "a/pipeline.py": pipeline("a", {"one": "../out/one.txt", "two": "../out/two.txt"}),
            "b/pipeline.py": pipeline("b", {"three": "../out/three.txt"}),
            "out/.gitignore": "# mine\n/notes.txt\n",
            ".gitignore": "__pycache__/\n",  # as a Python project has: bytecode is not committed
        },
    )


def test_a_run_of_one_pipeline_drops_its_removed_stage_and_keeps_the_other_pipeline_s(
    project, pivot
) -> None:
    _two_pipelines_sharing_out(project)
    pivot("run", "--all")
    assert block(project, "out") == ["/one.txt", "/three.txt", "/two.txt"]

    write_files(project, {"a/pipeline.py": pipeline("a", {"one": "../out/one.txt"})})
    pivot("run", cwd="a")  # loads pipeline a only
    assert block(project, "out") == ["/one.txt", "/three.txt"]
    assert (project / "out/.gitignore").read_text().startswith("# mine\n/notes.txt\n")
    assert ignored(project, "out/one.txt") and ignored(project, "out/three.txt")
    assert ignored(project, "out/notes.txt")
    assert "out/two.txt" in untracked(project)  # the file is left; git sees it again


def test_an_output_moved_to_another_folder_leaves_no_line_behind(project, pivot) -> None:
    git(project, "init", "-q")
    write_files(project, {"pipeline.py": pipeline("p", {"s": "old/s.txt"})})
    pivot("run")
    assert block(project, "old") == ["/s.txt"]
    write_files(project, {"pipeline.py": pipeline("p", {"s": "new/s.txt"})})
    pivot("run")
    assert not (project / "old/.gitignore").exists()
    assert block(project, "new") == ["/s.txt"]
    assert "old/s.txt" in untracked(project) and "new/s.txt" not in untracked(project)


def test_a_record_removed_with_git_loses_its_line_at_the_next_run(project, pivot) -> None:
    git(project, "init", "-q")
    write_files(project, {"pipeline.py": pipeline("p", {"s": "data/s.txt"}), "data/raw.csv": "x"})
    pivot("track", "data/raw.csv")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "track")
    assert ignored(project, "data/raw.csv")

    git(project, "rm", "-q", ".pivot/tracked/data/raw.csv.json")
    pivot("run")
    assert block(project, "data") == ["/s.txt"]
    assert not ignored(project, "data/raw.csv") and ignored(project, "data/s.txt")
    assert "data/raw.csv" in untracked(project)


def test_untrack_and_a_tracked_only_checkout_keep_the_outputs_lines(project, pivot) -> None:
    git(project, "init", "-q")
    write_files(
        project,
        {
            "p/pipeline.py": pipeline("p", {"s": "../data/s.txt"}),
            "data/a.csv": "a",
            "data/b.csv": "b",
            "data/c.csv": "c",
        },
    )
    pivot("run", cwd="p")
    pivot("track", "data/a.csv", "data/b.csv", "data/c.csv")
    assert block(project, "data") == ["/a.csv", "/b.csv", "/c.csv", "/s.txt"]
    pivot("untrack", "data/a.csv")  # no pipeline loaded: the lock file owns data/s.txt
    assert block(project, "data") == ["/b.csv", "/c.csv", "/s.txt"]
    (project / ".pivot/tracked/data/b.csv.json").unlink()  # the record deleted by hand
    pivot("checkout", "data/c.csv")  # tracked data only: no pipeline loaded
    assert block(project, "data") == ["/c.csv", "/s.txt"]
    seen = untracked(project)
    assert "data/a.csv" in seen and "data/b.csv" in seen
    assert "data/c.csv" not in seen and "data/s.txt" not in seen


def test_pull_in_a_fresh_clone_keeps_git_ignore_files_as_checkout_does(
    project, pivot, tmp_path
) -> None:
    _two_pipelines_sharing_out(project)
    pivot("remote", "add", "origin", str(tmp_path / "store"), "--default")
    pivot("run", "--all")
    pivot("push", "--all")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "first")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    in_clone = type(pivot)(clone)
    # A later commit drops stage two; its lock file and .gitignore line came with the clone.
    write_files(clone, {"a/pipeline.py": pipeline("a", {"one": "../out/one.txt"})})
    in_clone("pull", cwd="a")  # loads pipeline a only
    assert (clone / "out/one.txt").read_text() == "one"
    assert block(clone, "out") == ["/one.txt", "/three.txt"]
    assert (clone / "out/.gitignore").read_text().startswith("# mine\n/notes.txt\n")
    assert ignored(clone, "out/one.txt") and ignored(clone, "out/three.txt")
    assert not ignored(clone, "out/two.txt")
    changed = sorted(line[3:] for line in git(clone, "status", "--porcelain").splitlines())
    assert changed == ["a/pipeline.py", "out/.gitignore"]
    in_clone("pull", "--all")  # b's output placed; its line kept, nothing else changes
    assert (clone / "out/three.txt").read_text() == "three"
    assert block(clone, "out") == ["/one.txt", "/three.txt"]
    assert untracked(clone) == []
