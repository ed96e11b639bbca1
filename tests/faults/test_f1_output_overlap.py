"""Outputs that would delete a pipeline, or overwrite one another, are refused before
anything is removed or written: a stage whose output is its pipeline's file or folder
(or an ancestor of it), a tree manifest naming an entry twice or as both a file and a
folder, and lock files whose outputs overlap. A size no integer can hold is bad input."""

from __future__ import annotations

import pytest
from paths_support import assert_refused, cache_file, git_init, write_lock
from support import add_blob, declare_stage, write_files

from pivot.cache.hashing import TreeEntry, encode_tree, hash_bytes
from pivot.cache.objects import LocalCache
from pivot.errors import PivotError
from pivot.project import Project
from pivot.run.lockfile import Lock, check_disjoint

STAGE_WITH_OUT = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("{name}")

def s() -> Annotated[str, pivot.Out({out!r}, pivot.loaders.Text())]:
    return "stage output\\n"

pipeline.register(s)
"""

TWO_STAGES = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    return "a\\n"

def t() -> Annotated[str, pivot.Out("b.txt", pivot.loaders.Text())]:
    return "b\\n"

pipeline.register(s)
pipeline.register(t)
"""


@pytest.mark.parametrize(
    ("out", "needle"),
    [(".", "'.' (sub in the project)"), ("pipeline.py", "the file of the pipeline")],
)
def test_an_output_that_is_the_pipeline_is_refused(project, pivot, out, needle):
    write_files(
        project,
        {"sub/pipeline.py": STAGE_WITH_OUT.format(name="sub", out=out), "sub/notes.txt": "mine"},
    )
    proc = pivot("run", cwd="sub", rc=None)
    assert_refused(proc, "stage sub/s", needle, "sub/pipeline.py")
    assert (project / "sub" / "notes.txt").read_text() == "mine"
    assert "pivot.Pipeline" in (project / "sub" / "pipeline.py").read_text()


def test_an_output_holding_another_pipeline_is_refused(project, pivot):
    write_files(
        project,
        {
            "pipeline.py": STAGE_WITH_OUT.format(name="top", out="deep"),
            "deep/sub/pipeline.py": STAGE_WITH_OUT.format(name="sub", out="../../o.txt"),
        },
    )
    proc = pivot("run", "--all", rc=None)
    assert_refused(proc, "stage top/s", "'deep'", "deep/sub/pipeline.py")
    assert (project / "deep" / "sub" / "pipeline.py").exists()


def crafted_manifest(project, relpaths: list[str]) -> dict:
    project_ = Project(project)
    cache = LocalCache(project_.cache_dir, project_.tmp_dir)
    entries = [TreeEntry(rel, add_blob(cache, rel.encode()), len(rel), 0o644) for rel in relpaths]
    manifest = encode_tree(entries)
    add_blob(cache, manifest)
    return {"hash": hash_bytes(manifest), "size": 1, "kind": "dir"}


@pytest.mark.parametrize(
    ("relpaths", "needle"),
    [(["a", "a"], "names 'a' twice"), (["a", "a/b"], "names 'a' both as a file and as the folder")],
)
def test_a_manifest_with_clashing_entries_is_refused(project, pivot, tmp_path, relpaths, needle):
    git_init(project)
    (tmp_path / "remote").mkdir(exist_ok=True)  # an empty remote (a missing folder is an error)
    pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    write_lock(project, "p/s", {"tree": crafted_manifest(project, relpaths)})
    declare_stage(project, "p/s", ["tree"])
    assert_refused(pivot("pull", "--all", rc=None), "tree manifest", needle)
    assert not (project / "tree").exists()


@pytest.mark.parametrize(
    ("first", "second", "needle"),
    [("a", "a/b", "the output 'a' and 'a/b' inside it"), ("a", "a", "the output 'a' twice")],
)
def test_overlapping_lock_files_are_refused_before_anything_is_placed(first, second, needle):
    digest = {"hash": hash_bytes(b"x"), "size": 1, "kind": "file"}
    locks = [
        Lock("p/s", "1" * 64, {}, {}, {}, {first: digest}),
        Lock("q/t", "2" * 64, {}, {}, {}, {second: digest}),
    ]
    with pytest.raises(PivotError) as caught:
        check_disjoint(locks)
    assert str(caught.value).startswith(
        f"The lock files .pivot/stages/p/s.lock and .pivot/stages/q/t.lock name {needle}: "
        f"checking them out would overwrite one with the other, so nothing was checked out."
    )


def test_pull_all_leaves_overlapping_lock_files_of_no_stage_alone(project, pivot, tmp_path):
    git_init(project)
    (tmp_path / "remote").mkdir(exist_ok=True)  # an empty remote (a missing folder is an error)
    pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    write_lock(project, "p/s", {"a": cache_file(project, b"first\n")})
    write_lock(project, "q/t", {"a/b": cache_file(project, b"second\n")})
    proc = pivot("pull", "--all")
    for lock in ("p/s", "q/t"):
        assert f".pivot/stages/{lock}.lock belongs to no stage of the project" in proc.stderr
    assert not (project / "a").exists()


def test_checkout_leaves_a_lock_naming_another_stages_output_alone(project, pivot):
    write_files(project, {"pipeline.py": TWO_STAGES})
    pivot("run")
    (project / "a.txt").unlink()
    (project / "b.txt").unlink()
    write_lock(project, "p/t", {"a.txt": cache_file(project, b"crafted\n")})
    proc = pivot("checkout")
    assert "records the outputs a.txt, but stage p/t declares b.txt" in proc.stderr
    assert (project / "a.txt").read_text() == "a\n" and not (project / "b.txt").exists()


def test_an_unbounded_size_in_a_lock_file_is_refused(project, pivot, tmp_path):
    (tmp_path / "remote").mkdir(exist_ok=True)  # an empty remote (a missing folder is an error)
    pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    out = {**cache_file(project, b"x\n"), "size": 10**40}
    lock = write_lock(project, "p/s", {"o.txt": out})
    proc = pivot("push", "--all", rc=None)
    assert_refused(proc, str(lock), "below 2**63")
