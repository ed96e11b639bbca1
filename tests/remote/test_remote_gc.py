"""`pivot gc --remote` on SeaweedFS: dead packs go, partly live packs are repacked,
branches and tags are kept, and neither a concurrent push nor a kill loses anything a
reachable lock file needs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from support import PYTHONPATH, PivotCLI, free_ports, git, write_files

STAGES = 6
PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")
VERSIONS = {versions}


def make(n):
    def stage() -> Annotated[str, pivot.Out(f"out/{{n}}.txt", pivot.loaders.Text())]:
        return f"{{n}} {{VERSIONS[n]}} " * 500
    stage.__name__ = f"s{{n}}"
    return stage


for n in range({stages}):
    pipeline.register(make(n))
"""


def pipeline(changed: dict[int, str] | None = None) -> str:
    versions = {n: (changed or {}).get(n, "v1") for n in range(STAGES)}
    return PIPELINE.format(versions=versions, stages=STAGES)


def s3_remote(cli: PivotCLI, seaweedfs, bucket: str) -> None:
    cli("remote", "add", "--default", "origin", f"s3://{bucket}/cache")
    for key, value in seaweedfs.options().items():
        secret = ["--local"] if "key" in key else []
        cli("remote", "modify", *secret, "origin", key, value)


def objects(seaweedfs, bucket: str) -> dict[str, int]:
    pages = seaweedfs.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", ())}


def commit(project, pivot, changed: dict[int, str], message: str) -> None:
    (project / "pipeline.py").write_text(pipeline(changed))
    pivot("run")
    pivot("push")
    git(project, "add", "-A")
    git(project, "commit", "-qm", message)


def every_ref_pulls(tmp_path, project, seaweedfs, refs: list[str]) -> None:
    """A fresh clone pulls every output of each ref from the remote."""
    target = tmp_path / f"clone-{time.monotonic_ns()}"
    git(tmp_path, "clone", "-q", str(project), str(target))
    cli = PivotCLI(target)
    for key, value in seaweedfs.options().items():
        if "key" in key:
            cli("remote", "modify", "--local", "origin", key, value)
    for ref in refs:
        git(target, "checkout", "-q", "-f", ref)
        shutil.rmtree(target / "out", ignore_errors=True)
        cli("pull", "--all")
        assert len(list((target / "out").glob("*.txt"))) == STAGES, ref


@pytest.fixture(scope="module")
def template(tmp_path_factory, seaweedfs):
    """main (tagged v-old at its first commit), branch exp, then main moves on twice,
    each pushed: v2's outputs of s0 and s1 are dead, its s2 lives on in v3."""
    root = tmp_path_factory.mktemp("template") / "proj"
    root.mkdir()
    pivot = PivotCLI(root)
    pivot("init")
    bucket = seaweedfs.new_bucket()
    write_files(root, {"pipeline.py": pipeline()})
    git(root, "init", "-q", "-b", "main")
    s3_remote(pivot, seaweedfs, bucket)
    commit(root, pivot, {}, "v1")
    git(root, "tag", "v-old")
    git(root, "checkout", "-qb", "exp")
    commit(root, pivot, {0: "exp"}, "exp")
    git(root, "checkout", "-q", "main")
    commit(root, pivot, {0: "v2", 1: "v2", 2: "v2"}, "v2")
    commit(root, pivot, {0: "v3", 1: "v3", 2: "v2"}, "v3")
    return root, bucket


@pytest.fixture
def history(tmp_path, template, seaweedfs):
    """A copy of the template project and of its bucket."""
    root, source = template
    project = tmp_path / "proj"
    shutil.copytree(root, project, symlinks=True)
    bucket = seaweedfs.new_bucket()
    client = seaweedfs.client()
    for key in objects(seaweedfs, source):
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": source, "Key": key})
    pivot = PivotCLI(project)
    pivot("remote", "modify", "origin", "url", f"s3://{bucket}/cache")
    return project, pivot, bucket


def test_gc_remote_frees_dead_data_and_keeps_branches_and_tags(tmp_path, seaweedfs, history):
    project, pivot, bucket = history
    before = objects(seaweedfs, bucket)
    dry = pivot("gc", "--remote", "--grace", "0", "-n", "--json")
    # Dead: v2's outputs of s0 and s1; their pack's live blob (s2) is repacked.
    assert '"dry_run": true' in dry.stdout and '"blobs_removed": 2' in dry.stdout, dry.stdout
    assert '"packs_repacked": 1' in dry.stdout and '"runs_removed": 2' in dry.stdout
    assert objects(seaweedfs, bucket) == before
    young = pivot("gc", "--remote")  # the default grace period spares it all
    assert "Removed 0 pack(s) and 0 index(es)" in young.stdout
    assert objects(seaweedfs, bucket) == before

    done = pivot("gc", "--remote", "origin", "--grace", "0")
    assert "Removed 1 pack(s)" in done.stdout, done.stdout
    after = objects(seaweedfs, bucket)
    assert sum(after.values()) < sum(before.values())
    every_ref_pulls(tmp_path, project, seaweedfs, ["main", "exp", "v-old"])
    again = pivot("gc", "--remote", "--grace", "0")
    assert "Removed 0 pack(s) and 0 index(es)" in again.stdout


def test_a_killed_gc_leaves_everything_fetchable_and_a_rerun_finishes(tmp_path, seaweedfs, history):
    project, pivot, bucket = history
    indexes = {k for k in objects(seaweedfs, bucket) if "/index/" in k}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pivot", "gc", "--remote", "--grace", "0"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:  # killed once its new index is written, before or while old objects go
        while proc.poll() is None:
            if {k for k in objects(seaweedfs, bucket) if "/index/" in k} - indexes:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait()
    every_ref_pulls(tmp_path, project, seaweedfs, ["main", "exp", "v-old"])
    pivot("gc", "--remote", "--grace", "0")  # the re-run finishes the work
    assert "Removed 0 pack(s) and 0 index(es)" in pivot("gc", "--remote", "--grace", "0").stdout
    every_ref_pulls(tmp_path, project, seaweedfs, ["main"])


def test_gc_racing_a_push_loses_nothing_the_push_indexed(tmp_path, seaweedfs, history):
    project, pivot, _ = history
    time.sleep(1.5)  # the history is older than the grace period below
    (project / "pipeline.py").write_text(pipeline(dict.fromkeys(range(STAGES), "raced")))
    pivot("run")
    push = subprocess.Popen(
        [sys.executable, "-m", "pivot", "push"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    rounds = 0
    while push.poll() is None or rounds == 0:
        pivot("gc", "--remote", "--grace", "0.0003")  # about one second
        rounds += 1
    assert push.wait() == 0, push.stderr.read() if push.stderr else ""
    git(project, "add", "-A")
    git(project, "commit", "-qm", "raced")
    pivot("gc", "--remote", "--grace", "0.0003")
    every_ref_pulls(tmp_path, project, seaweedfs, ["main"])


def test_an_unreachable_remote_is_a_clear_error(project, pivot, seaweedfs):
    (port,) = free_ports(1)
    s3_remote(pivot, seaweedfs, "nowhere")
    pivot("remote", "modify", "origin", "endpoint_url", f"http://127.0.0.1:{port}")
    failed = pivot("gc", "--remote", rc=1)
    assert f"127.0.0.1:{port}" in failed.stderr and "Traceback" not in failed.stderr
