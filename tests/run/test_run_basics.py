"""`pivot init`, `run`, `status`, `list`, `checkout` on a real project in a temp dir."""

from __future__ import annotations

import json
import os
import pathlib
import stat

from support import COUNTER, executions, rewrite_keeping_mtime, write_files

CHAIN = (
    """
import pathlib
from typing import Annotated, TypedDict

import pivot
"""
    + COUNTER
    + """

pipeline = pivot.Pipeline("chain")


class CleanOut(TypedDict):
    clean: Annotated[pathlib.Path, pivot.Out("clean.txt", pivot.loaders.PathOnly())]


def clean(raw: Annotated[pathlib.Path, pivot.Dep("raw.txt", pivot.loaders.PathOnly())]) -> CleanOut:
    _count("clean")
    out = pathlib.Path("clean.txt")
    out.write_text(raw.read_text().upper())
    return CleanOut(clean=out)


def count(
    text: Annotated[str, pivot.Dep("clean.txt", pivot.loaders.Text())],
) -> Annotated[dict, pivot.Out("count.json", pivot.loaders.JSON())]:
    _count("count")
    return {"chars": len(text)}


pipeline.register(clean)
pipeline.register(count)
"""
)


def test_init_creates_pivot_dir_with_gitignore(project: pathlib.Path) -> None:
    ignore = (project / ".pivot" / ".gitignore").read_text()
    assert "/cache\n" in ignore and "/state.db" in ignore
    assert (project / ".pivot" / "stages").is_dir()


def test_run_then_noop_then_status(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    first = pivot("run")
    assert "ran" in first.stdout and "chain/clean" in first.stdout
    assert (project / "clean.txt").read_text() == "HELLO\n"
    assert json.loads((project / "count.json").read_text()) == {"chars": 6}
    assert executions(project) == ["clean", "count"]

    again = pivot("run")
    assert "Every stage is up to date" in again.stdout
    assert executions(project) == ["clean", "count"]

    status = pivot("status")
    assert "Every stage is up to date (2 stages)" in status.stdout


def test_lock_files_are_deterministic_and_complete(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    lock_path = project / ".pivot" / "stages" / "chain" / "count.lock"
    text = lock_path.read_text()
    lock = json.loads(text)
    assert lock["stage"] == "chain/count"
    assert set(lock) == {"schema", "stage", "run_key", "fingerprint", "params", "deps", "outs"}
    assert lock["outs"]["count.json"]["size"] == (project / "count.json").stat().st_size
    assert text == json.dumps(lock, indent=2, sort_keys=True) + "\n"
    pivot("run", "--force")
    assert lock_path.read_text() == text


def test_dep_change_reruns_only_downstream(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    (project / "raw.txt").write_text("hello world\n")
    status = pivot("status")
    assert "dep changed: raw.txt" in status.stdout
    pivot("run")
    assert executions(project) == ["clean", "count", "clean", "count"]


def test_unchanged_output_stops_propagation(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    (project / "raw.txt").write_text("HELLO\n")  # clean.txt stays identical
    pivot("run")
    assert executions(project) == ["clean", "count", "clean"]


def test_code_change_reruns_and_status_names_it(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    source = (project / "pipeline.py").read_text()
    (project / "pipeline.py").write_text(source.replace('{"chars": len(text)}', '{"n": len(text)}'))
    status = pivot("status")
    assert "code changed" in status.stdout and "chain/count" in status.stdout
    pivot("run")
    assert executions(project)[-1] == "count"
    assert executions(project).count("clean") == 1


def test_comment_and_docstring_changes_do_not_rerun(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    source = (project / "pipeline.py").read_text()
    source = source.replace(
        '    _count("count")', '    """Count."""\n    # a comment\n    _count("count")'
    )
    (project / "pipeline.py").write_text(source)
    assert "Every stage is up to date" in pivot("run").stdout


def test_reverted_change_is_restored_from_run_record(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    (project / "raw.txt").write_text("other\n")
    pivot("run")
    (project / "raw.txt").write_text("hello\n")
    out = pivot("run")
    assert "restored" in out.stdout
    assert executions(project) == ["clean", "count", "clean", "count"]
    assert (project / "clean.txt").read_text() == "HELLO\n"


def test_deleted_output_is_restored_not_rerun(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    (project / "count.json").unlink()
    assert "restored" in pivot("run").stdout
    assert (project / "count.json").exists()
    assert executions(project) == ["clean", "count"]


def test_hand_edited_output_never_corrupts_the_cache(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    (project / "clean.txt").write_text("tampered\n")
    objects = [p for p in (project / ".pivot/cache/objects").rglob("*") if p.is_file()]
    assert objects and all(not p.stat().st_mode & stat.S_IWUSR for p in objects)
    assert any(p.read_text() == "HELLO\n" for p in objects)
    refused = pivot("run", rc=1)  # the edit exists nowhere else: never discarded silently
    assert "clean.txt" in refused.stderr and "--force" in refused.stderr
    assert (project / "clean.txt").read_text() == "tampered\n"
    pivot("checkout", "--force")
    assert (project / "clean.txt").read_text() == "HELLO\n"


def test_checkout_restores_outputs_and_link_modes(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    pivot("run")
    (project / "clean.txt").unlink()
    (project / "count.json").unlink()
    assert "Checked out 2" in pivot("checkout").stdout
    assert (project / "clean.txt").read_text() == "HELLO\n"
    os.unlink(project / "clean.txt")
    pivot("checkout", "--link", "symlink")
    assert (project / "clean.txt").is_symlink()
    assert (project / "clean.txt").read_text() == "HELLO\n"
    os.unlink(project / "clean.txt")
    pivot("checkout", "--link", "hardlink")
    assert (project / "clean.txt").stat().st_nlink == 2
    assert "Every stage is up to date" in pivot("run").stdout


def test_list_shows_ids_files_deps_and_outs(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    rows = json.loads(pivot("list", "--json").stdout)
    assert rows == [
        {"stage": "chain/clean", "file": "pipeline.py", "deps": ["raw.txt"], "outs": ["clean.txt"]},
        {
            "stage": "chain/count",
            "file": "pipeline.py",
            "deps": ["clean.txt"],
            "outs": ["count.json"],
        },
    ]


def test_targets_force_and_dry_run(project, pivot) -> None:
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "hello\n"})
    dry = pivot("run", "--dry-run")
    assert "would run" in dry.stdout and executions(project) == []
    assert not (project / ".pivot/stages/chain").exists()
    pivot("run", "clean")
    assert executions(project) == ["clean"]
    assert not (project / "count.json").exists()
    pivot("run", "chain/count")
    pivot("run", "count", "--force")
    assert executions(project) == ["clean", "count", "count"]


def test_helper_module_rewritten_keeping_size_and_mtime_reruns_its_stage(project, pivot) -> None:
    """A helper module the stage imports, rewritten in place with its size and mtime kept
    (a checkout within the same second on a coarse file system, a tool restoring mtimes):
    its code fingerprint changes, the stage runs again with the new code."""
    pipeline = CHAIN.replace("import pivot\n", "import pivot\nimport shout\n", 1).replace(
        "raw.read_text().upper()", "shout.loud(raw.read_text())"
    )
    helper = "def loud(text):\n    return text.upper()\n"
    write_files(project, {"pipeline.py": pipeline, "shout.py": helper, "raw.txt": "alpha\n"})
    pivot("run")
    assert (project / "clean.txt").read_text() == "ALPHA\n"
    rewrite_keeping_mtime(project / "shout.py", helper.replace("upper", "lower"))
    assert "chain/clean" in pivot("run").stdout
    assert (project / "clean.txt").read_text() == "alpha\n"
    assert executions(project) == ["clean", "count", "clean", "count"]
    pivot("run")  # and then up to date
    assert executions(project) == ["clean", "count", "clean", "count"]


def test_same_size_rewrite_keeping_mtime_is_noticed(project, pivot) -> None:
    """Like `tar -x` or `cp -p` over a file: same size, same mtime, same inode."""
    write_files(project, {"pipeline.py": CHAIN, "raw.txt": "alpha\n"})
    pivot("run")
    raw = project / "raw.txt"
    before = raw.stat()
    with open(raw, "r+") as handle:
        handle.write("bravo\n")
    os.utime(raw, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (raw.stat().st_size, raw.stat().st_mtime_ns, raw.stat().st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert "dep changed: raw.txt" in pivot("status").stdout
    pivot("run")
    assert (project / "clean.txt").read_text() == "BRAVO\n"
