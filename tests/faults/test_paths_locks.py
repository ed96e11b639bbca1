"""Crafted lock files and run records never make Pivot write into .git/ or .pivot/.

The attacker commits a lock file (and pushes the blobs it names); the victim runs an
ordinary command. Every path from a lock file passes one validator: a command that acts
on lock files (pull, fetch, push, checkout, gc) stops with an error naming the file and
the path; `run` and `status` warn and treat the stage as never run.
"""

from __future__ import annotations

import pathlib
import shutil

import pytest
from paths_support import (
    HOOK,
    assert_refused,
    cache_file,
    cache_tree,
    git_init,
    protected,
    publish_raw,
    read_lock_json,
    write_lock,
)
from support import write_files

from pivot.cache.hashing import TreeEntry, encode_tree, hash_bytes

REDIRECT = b"default_remote: evil\nremotes:\n  evil:\n    url: /tmp/attacker\n"

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:
    return "honest\\n"

pipeline.register(s)
"""


def crafted_clone(project, pivot, tmp_path, path: str, kind: str, remote=None, **env) -> dict:
    """A pushed output under an innocent name, then the lock renamed to `path` (the
    commit the victim pulls); returns the output's lock entry."""
    git_init(project)
    out = cache_tree(project, {"pre-commit": (HOOK, 0o755)}) if kind == "dir" else None
    out = out or cache_file(project, REDIRECT)
    for args in remote or [["remote", "add", "origin", str(tmp_path / "remote"), "--default"]]:
        pivot(*args)
    write_lock(project, "p/s", {"innocent": out})
    pivot("push", "--all", **env)
    write_lock(project, "p/s", {path: out})
    return out


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (".git/hooks", "dir"),
        (".GIT/hooks", "dir"),
        (".git", "dir"),
        (".pivot/config.local.yaml", "file"),
        (".Pivot/config.local.yaml", "file"),
        ("sub/.git/config", "file"),
    ],
)
def test_pull_all_refuses_a_lock_output_in_git_or_pivot(project, pivot, tmp_path, path, kind):
    crafted_clone(project, pivot, tmp_path, path, kind)
    shutil.rmtree(project / ".pivot" / "cache")
    before = protected(project)
    proc = pivot("pull", "--all", rc=None)
    assert_refused(proc, "p/s.lock", repr(path))
    assert protected(project) == before
    assert not (project / ".git" / "hooks" / "pre-commit").exists()
    assert not (project / ".Pivot").exists() and not (project / ".GIT").exists()
    assert not (project / "sub").exists()


@pytest.mark.s3
def test_pull_all_from_seaweedfs_refuses_a_lock_output_in_git_hooks(
    project, pivot, tmp_path, seaweedfs
):
    bucket = seaweedfs.new_bucket()
    remote = [
        ["remote", "add", "origin", f"s3://{bucket}/cache", "--default"],
        ["remote", "modify", "origin", "endpoint_url", seaweedfs.endpoint],
        ["remote", "modify", "origin", "region", "us-east-1"],
    ]
    env = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}
    crafted_clone(project, pivot, tmp_path, ".git/hooks", "dir", remote, **env)
    shutil.rmtree(project / ".pivot" / "cache")
    before = protected(project)
    assert_refused(pivot("pull", "--all", rc=None, **env), "p/s.lock", "'.git/hooks'")
    assert protected(project) == before
    assert not (project / ".git" / "hooks" / "pre-commit").exists()


@pytest.mark.parametrize(
    "command",
    [("checkout", "--all"), ("fetch", "--all"), ("push", "--all"), ("gc",), ("pull", "--all")],
)
def test_every_command_reading_locks_refuses_the_crafted_one(project, pivot, tmp_path, command):
    write_files(project, {"pipeline.py": PIPELINE})  # `checkout` reads the locks of its stages
    out = crafted_clone(project, pivot, tmp_path, ".git/hooks", "dir")
    before = protected(project)
    objects = sorted((project / ".pivot" / "cache").rglob("*"))
    proc = pivot(*command, rc=None)
    assert_refused(proc, "p/s.lock", "'.git/hooks'", ".git")
    assert protected(project) == before
    assert sorted((project / ".pivot" / "cache").rglob("*")) == objects  # gc removed nothing
    assert out["hash"] in read_lock_json(project, "p/s")["outs"][".git/hooks"]["hash"]


def test_pull_of_a_pipeline_refuses_its_crafted_lock(project, pivot, tmp_path):
    write_files(project, {"pipeline.py": PIPELINE})
    crafted_clone(project, pivot, tmp_path, ".git/hooks", "dir")
    shutil.rmtree(project / ".pivot" / "cache")
    before = protected(project)
    assert_refused(pivot("pull", rc=None), "p/s.lock", "'.git/hooks'")
    assert protected(project) == before


def test_a_crafted_dependency_path_is_refused_too(project, pivot, tmp_path):
    git_init(project)
    write_files(project, {"pipeline.py": PIPELINE})
    write_lock(project, "p/s", {"o.txt": cache_file(project, b"x")}, deps={".GIT/config": "a" * 64})
    assert_refused(pivot("checkout", "--all", rc=None), "p/s.lock", "'.GIT/config'")


def test_run_treats_a_crafted_lock_with_the_right_run_key_as_stale(project, pivot, tmp_path):
    """The lock names the stage's true run key but other outputs: restoring it would
    write them. The lock is refused with a warning, and the stage runs."""
    git_init(project)
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    run_key = read_lock_json(project, "p/s")["run_key"]
    shutil.rmtree(project / ".pivot" / "cache" / "runs")
    (project / "o.txt").unlink()
    tree = cache_tree(project, {"pre-commit": (HOOK, 0o755)})
    write_lock(project, "p/s", {".git/hooks": tree}, run_key=run_key)
    before = protected(project)
    proc = pivot("run")
    assert "p/s.lock" in proc.stderr and "'.git/hooks'" in proc.stderr, proc.stderr
    assert "ran" in proc.stdout
    assert protected(project) == before
    assert (project / "o.txt").read_text() == "honest\n"
    assert list(read_lock_json(project, "p/s")["outs"]) == ["o.txt"]


def test_run_does_not_restore_outputs_the_stage_does_not_declare(project, pivot):
    """A lock with the right run key naming a valid project path the stage does not
    write (here its own pipeline file) must not overwrite that path."""
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    run_key = read_lock_json(project, "p/s")["run_key"]
    shutil.rmtree(project / ".pivot" / "cache" / "runs")
    evil = cache_file(project, b"raise SystemExit('pwned')\n")
    write_lock(project, "p/s", {"pipeline.py": evil}, run_key=run_key)
    proc = pivot("run")
    assert (project / "pipeline.py").read_text() == PIPELINE.lstrip("\n")
    assert "ran" in proc.stdout


def test_run_refuses_a_crafted_run_record(project, pivot):
    """A run record for the stage's run key (as a shared remote could deliver) that
    names .git/hooks is read as absent: the stage runs."""
    from pivot.cache.runs import encode_record

    git_init(project)
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    run_key = read_lock_json(project, "p/s")["run_key"]
    (project / ".pivot" / "stages" / "p" / "s.lock").unlink()
    (project / "o.txt").unlink()
    tree = cache_tree(project, {"pre-commit": (HOOK, 0o755)})
    record = project / ".pivot" / "cache" / "runs" / run_key[:2] / run_key[2:]
    record.chmod(0o644)
    record.write_bytes(encode_record({".git/hooks": tree}))
    before = protected(project)
    proc = pivot("run")
    assert "ran" in proc.stdout, proc.stdout
    assert protected(project) == before
    assert (project / "o.txt").read_text() == "honest\n"


@pytest.mark.parametrize("entry", ["../x", "a/../../x", ".git/x", "sub/.GIT/config", "/x"])
@pytest.mark.parametrize("command", ["pull", "checkout"])
def test_a_tree_entry_that_leaves_its_output_is_refused(project, pivot, tmp_path, entry, command):
    """The manifest of output `data` names an entry outside `data`, or one that makes
    `data` (or a folder in it) a git repository."""
    git_init(project)
    write_files(
        project, {"pipeline.py": PIPELINE.replace('"o.txt", pivot.loaders.Text()', '"data"')}
    )
    manifest = encode_tree([TreeEntry(entry, hash_bytes(HOOK), len(HOOK), 0o755)])
    if command == "pull":
        publish_raw(tmp_path / "remote", [manifest, HOOK])
        pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    else:
        cache_tree(project, {entry: (HOOK, 0o755)})
    out = {"hash": hash_bytes(manifest), "size": len(HOOK), "kind": "dir"}
    write_lock(project, "p/s", {"data": out})
    before = protected(project)
    proc = pivot(command, rc=None)
    assert_refused(proc, "tree manifest", hash_bytes(manifest)[:12], repr(entry))
    assert protected(project) == before
    assert not (project / "data").exists()
    assert not (project / "x").exists() and not (tmp_path / "x").exists()
    assert not (project.parent / "x").exists() and not pathlib.Path("/x").exists()


def test_run_does_not_restore_a_tree_with_a_refused_entry(project, pivot):
    """The stage's lock (right run key) names a tree whose entry is `.git/config`: the
    restore is refused with a warning, and the stage runs."""
    pipeline = PIPELINE.replace(
        'def s() -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:\n'
        '    return "honest\\n"',
        'def s() -> Annotated[str, pivot.Out("data", pivot.loaders.PathOnly())]:\n'
        "    import pathlib\n"
        '    pathlib.Path("data").mkdir()\n'
        '    pathlib.Path("data/f.txt").write_text("honest\\n")\n'
        '    return pathlib.Path("data")',
    )
    write_files(project, {"pipeline.py": pipeline})
    pivot("run")
    run_key = read_lock_json(project, "p/s")["run_key"]
    shutil.rmtree(project / ".pivot" / "cache" / "runs")
    shutil.rmtree(project / "data")
    tree = cache_tree(project, {".git/config": (b"[core]\n\tfsmonitor = evil\n", 0o644)})
    write_lock(project, "p/s", {"data": tree}, run_key=run_key)
    proc = pivot("run")
    assert "Running stage p/s instead of restoring it" in proc.stderr, proc.stderr
    assert "'.git/config'" in proc.stderr and "ran" in proc.stdout
    assert sorted(p.name for p in (project / "data").iterdir()) == ["f.txt"]


def test_a_stage_output_holding_a_git_folder_is_refused(project, pivot):
    """What a stage stores must be restorable: a directory output with a `.git` folder
    in it fails the stage, naming the file, and no lock is written."""
    pipeline = PIPELINE.replace(
        'def s() -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:\n'
        '    return "honest\\n"',
        'def s() -> Annotated[str, pivot.Out("data", pivot.loaders.PathOnly())]:\n'
        "    import pathlib\n"
        '    pathlib.Path("data/.Git").mkdir(parents=True)\n'
        '    pathlib.Path("data/.Git/HEAD").write_text("ref: refs/heads/main\\n")\n'
        '    return pathlib.Path("data")',
    )
    write_files(project, {"pipeline.py": pipeline})
    proc = pivot("run", rc=1)
    out = proc.stdout + proc.stderr
    assert "Stage p/s" in out and "'.Git/HEAD'" in out and ".git folder" in out, out
    assert "Traceback" not in out
    assert not (project / ".pivot" / "stages" / "p" / "s.lock").exists()
