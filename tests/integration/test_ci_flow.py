"""Issue: a downstream pipeline runs on a machine that never ran its upstreams.

Machine A (a git repo) runs, pushes and commits its lock files; machine B is a fresh
`git clone` with an empty cache. Remotes: a local directory and a real SeaweedFS server.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
from spec_projects import CHILD_PIPELINE, FEATURES_PIPELINE, MODEL_PIPELINE, ROOT_PIPELINE
from support import COUNTER, PivotCLI, executions, git, write_files


def counted(source: str, function: str) -> str:
    """A spec pipeline whose stage also logs that it executed."""
    marker = f"def {function}("
    head, tail = source.split(marker, 1)
    signature, body = tail.split(":\n", 1)
    return head + COUNTER + "\n" + marker + signature + f':\n    _count("{function}")\n' + body


PARENT_CHILD = {
    "pipeline.py": counted(ROOT_PIPELINE, "prepare"),
    "analysis/pipeline.py": counted(CHILD_PIPELINE, "analyze"),
}
SIBLINGS = {
    "pipelines/features/pipeline.py": counted(FEATURES_PIPELINE, "compute_features"),
    "pipelines/model/pipeline.py": counted(MODEL_PIPELINE, "train_model"),
}


class Machines:
    """Machine A (the origin repo) and clones of it, sharing one remote."""

    def __init__(
        self,
        tmp: pathlib.Path,
        remote_setup: list[list[str]],
        env: dict[str, str],
        empty_remote=lambda: None,
    ):
        self.tmp = tmp
        self.env = env
        self.empty_remote = empty_remote  # deletes everything on the remote, as by hand
        self.a = tmp / "machine-a"
        self.a.mkdir()
        git(self.a, "init", "-q")
        self.pivot_a = PivotCLI(self.a)
        self.run(self.pivot_a, "init")
        for args in remote_setup:
            self.run(self.pivot_a, *args)

    def run(self, cli: PivotCLI, *args: str, **kw):
        return cli(*args, **{**self.env, **kw})

    def publish(self, files: dict[str, str], *run_args: str, cwd: str | None = None) -> None:
        write_files(self.a, files)
        self.run(self.pivot_a, "run", *run_args, "--push", cwd=cwd)
        (self.a / "executions.log").unlink()
        outputs = ["*.csv", "*.txt", "!requirements.txt"]
        (self.a / ".gitignore").write_text("\n".join(["executions.log", *outputs]) + "\n")
        git(self.a, "add", "-A")
        git(self.a, "commit", "-qm", "machine A ran and pushed")

    def clone(self, name: str = "machine-b") -> tuple[pathlib.Path, PivotCLI]:
        target = self.tmp / name
        git(self.tmp, "clone", "-q", str(self.a), str(target))
        assert not (target / ".pivot/cache").exists()
        return target, PivotCLI(target)


@pytest.fixture(params=["directory", "seaweedfs"])
def machines(request, tmp_path) -> Machines:
    if request.param == "directory":
        store = tmp_path / "remote-store"
        setup = [["remote", "add", "origin", str(store), "--default"]]
        return Machines(tmp_path, setup, {}, lambda: shutil.rmtree(store))
    server = request.getfixturevalue("seaweedfs")
    bucket = server.new_bucket()
    setup = [
        ["remote", "add", "origin", f"s3://{bucket}/cache", "--default"],
        ["remote", "modify", "origin", "endpoint_url", server.endpoint],
        ["remote", "modify", "origin", "region", "us-east-1"],
    ]
    env = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}

    def empty_bucket() -> None:
        client = server.client()
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert listed, "nothing was pushed"
        for obj in listed:
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        assert not client.list_objects_v2(Bucket=bucket).get("Contents")

    return Machines(tmp_path, setup, env, empty_bucket)


@pytest.fixture
def local_machines(tmp_path) -> Machines:
    return Machines(tmp_path, [["remote", "add", "origin", str(tmp_path / "store"), "-d"]], {})


def test_fresh_clone_restores_parent_child_from_child_dir(machines) -> None:
    machines.publish(PARENT_CHILD, cwd="analysis")
    b, pivot_b = machines.clone()
    proc = machines.run(pivot_b, "run", cwd="analysis")
    assert executions(b) == []
    assert "restored  data_prep/prepare" in proc.stdout
    assert "restored  analysis/analyze" in proc.stdout
    for path in ("shared/data.csv", "analysis/report.txt"):
        assert (b / path).read_bytes() == (machines.a / path).read_bytes()
    assert "Every stage is up to date" in machines.run(pivot_b, "run", cwd="analysis").stdout
    subprocess.run(["git", "diff", "--exit-code"], cwd=b, check=True)


def test_a_push_after_the_remote_was_emptied_sends_everything_again(machines) -> None:
    """The no-op push answers from what it cached about the remote only while the remote
    is the one it listed (its identity object): emptied by hand, it is sent everything."""
    machines.publish(PARENT_CHILD, cwd="analysis")
    push = ("push", "--all", "--json")
    again = json.loads(machines.run(machines.pivot_a, *push).stdout)
    assert again["blobs"] == 0 and again["up_to_date"] == 2, again
    machines.empty_remote()
    refilled = json.loads(machines.run(machines.pivot_a, *push).stdout)
    assert refilled["blobs"] == 2 and refilled["runs"] == 2, refilled
    b, pivot_b = machines.clone()
    machines.run(pivot_b, "pull", "--all")
    for path in ("shared/data.csv", "analysis/report.txt"):
        assert (b / path).read_bytes() == (machines.a / path).read_bytes()


def test_changed_downstream_code_runs_only_that_stage(machines) -> None:
    machines.publish(PARENT_CHILD, cwd="analysis")
    b, pivot_b = machines.clone()
    source = (b / "analysis/pipeline.py").read_text()
    (b / "analysis/pipeline.py").write_text(source.replace("Processed", "Handled"))
    machines.run(pivot_b, "run", cwd="analysis")
    assert executions(b) == ["analyze"]
    assert (b / "analysis/report.txt").read_text() == "Handled 3 records\n"
    assert (b / "shared/data.csv").read_bytes() == (machines.a / "shared/data.csv").read_bytes()


def test_changed_upstream_helper_runs_both(local_machines) -> None:
    files = dict(PARENT_CHILD)
    files["rows.py"] = "def rows():\n    return '1,100\\n2,200\\n3,300\\n'\n"
    files["pipeline.py"] = "import rows\n" + files["pipeline.py"].replace(
        'out.write_text("id,value\\n1,100\\n2,200\\n3,300\\n")',
        'out.write_text("id,value\\n" + rows.rows())',
    )
    local_machines.publish(files, cwd="analysis")
    b, pivot_b = local_machines.clone()
    (b / "rows.py").write_text("def rows():\n    return '1,100\\n2,200\\n'\n")
    local_machines.run(pivot_b, "run", cwd="analysis")
    assert executions(b) == ["prepare", "analyze"]
    assert (b / "analysis/report.txt").read_text() == "Processed 2 records\n"


def test_sibling_layout_from_a_fresh_clone(local_machines) -> None:
    local_machines.publish(SIBLINGS, cwd="pipelines/model")
    b, pivot_b = local_machines.clone()
    proc = local_machines.run(pivot_b, "run", cwd="pipelines/model")
    assert executions(b) == [] and "restored  model/train_model" in proc.stdout
    assert (b / "pipelines/model/predictions.csv").read_text().startswith("# Model trained")


def test_all_from_a_fresh_clone(machines) -> None:
    machines.publish({**PARENT_CHILD, **SIBLINGS}, "--all")
    b, pivot_b = machines.clone()
    proc = machines.run(pivot_b, "run", "--all")
    assert executions(b) == []
    assert proc.stdout.count("  restored  ") == 4
    for path in (
        "shared/data.csv",
        "analysis/report.txt",
        "pipelines/features/output.csv",
        "pipelines/model/predictions.csv",
    ):
        assert (b / path).read_bytes() == (machines.a / path).read_bytes()


def test_run_records_restore_even_when_locks_are_older(local_machines) -> None:
    local_machines.publish(PARENT_CHILD, cwd="analysis")
    # A changes analyze, runs and pushes, but does not commit the new lock.
    source = (local_machines.a / "analysis/pipeline.py").read_text().replace("Processed", "Saw")
    (local_machines.a / "analysis/pipeline.py").write_text(source)
    local_machines.run(local_machines.pivot_a, "run", "--push", cwd="analysis")
    b, pivot_b = local_machines.clone()
    (b / "analysis/pipeline.py").write_text(source)
    proc = local_machines.run(pivot_b, "run", cwd="analysis")
    assert executions(b) == [] and "restored  analysis/analyze" in proc.stdout
    assert (b / "analysis/report.txt").read_text() == "Saw 3 records\n"


def test_upstream_output_nothing_here_reads_stays_remote(local_machines) -> None:
    header = "import pathlib\nfrom typing import Annotated\nimport pivot\n" + COUNTER
    chain = {
        "a/pipeline.py": header
        + """
pipeline = pivot.Pipeline("a")
def make() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    _count("a")
    return "A"
pipeline.register(make)
""",
        "b/pipeline.py": header
        + """
pipeline = pivot.Pipeline("b")
def step(x: Annotated[str, pivot.Dep("../a/a.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("b.txt", pivot.loaders.Text())]:
    _count("b")
    return x + "B"
pipeline.register(step)
""",
        "c/pipeline.py": header
        + """
pipeline = pivot.Pipeline("c")
def step(x: Annotated[str, pivot.Dep("../b/b.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("c.txt", pivot.loaders.Text())]:
    _count("c")
    return x + "C"
pipeline.register(step)
""",
    }
    local_machines.publish(chain, cwd="c")
    b, pivot_b = local_machines.clone()
    proc = local_machines.run(pivot_b, "run", cwd="c")
    assert executions(b) == []
    assert not (b / "a/a.txt").exists() and "(on the remote)" in proc.stdout
    assert (b / "b/b.txt").read_text() == "AB" and (b / "c/c.txt").read_text() == "ABC"
    store = local_machines.tmp / "store"
    store.rename(store.with_name("store-away"))  # a no-op run must not need the remote
    again = local_machines.run(pivot_b, "run", cwd="c")
    assert "Every stage is up to date" in again.stdout and again.stderr == ""
    kept = local_machines.run(pivot_b, "status", cwd="c").stdout
    assert "(on the remote)" in kept and "Every stage is up to date (3 stages)." in kept
    store.with_name("store-away").rename(store)
    local_machines.run(pivot_b, "run", "--materialize", cwd="c")
    assert (b / "a/a.txt").read_text() == "A"


def test_remote_unavailable_mid_run_falls_back_to_running(local_machines, tmp_path) -> None:
    local_machines.publish(PARENT_CHILD, cwd="analysis")
    b, pivot_b = local_machines.clone()
    local_machines.run(pivot_b, "fetch", "--json")  # B has now cached the remote's indexes
    shutil.rmtree(b / ".pivot/cache")
    shutil.rmtree(tmp_path / "store" / "packs")  # the blobs become unreachable
    proc = local_machines.run(pivot_b, "run", "--no-fallback", cwd="analysis", rc=1)
    assert "--no-fallback" in proc.stderr and "Traceback" not in proc.stderr
    assert executions(b) == []
    assert not (b / "shared/data.csv").exists() and not (b / "analysis/report.txt").exists()
    assert not list((b / ".pivot").rglob("*.tmp"))
    proc = local_machines.run(pivot_b, "run", cwd="analysis")
    assert "unavailable" in proc.stderr
    assert executions(b) == ["prepare", "analyze"]
    assert (b / "analysis/report.txt").read_text() == "Processed 3 records\n"


def test_remote_without_the_blobs_says_so_and_runs(local_machines, tmp_path) -> None:
    local_machines.publish(PARENT_CHILD, cwd="analysis")
    b, pivot_b = local_machines.clone()
    (tmp_path / "nobody-pushed-here").mkdir()  # an empty remote (a missing folder is an error)
    pivot_b("remote", "add", "empty", str(tmp_path / "nobody-pushed-here"), "--default")
    proc = pivot_b("run", cwd="analysis")
    assert "lacks 2 blob(s)" in proc.stderr and "were they pushed?" in proc.stderr
    assert "unavailable" not in proc.stderr
    assert executions(b) == ["prepare", "analyze"]
    assert (b / "analysis/report.txt").read_text() == "Processed 3 records\n"


def test_unreachable_remote_runs_offline_with_a_warning(local_machines) -> None:
    from support import free_ports

    local_machines.publish(PARENT_CHILD, cwd="analysis")
    b, pivot_b = local_machines.clone()
    (port,) = free_ports(1)
    pivot_b("remote", "add", "down", "s3://bucket/cache")
    pivot_b("remote", "modify", "down", "endpoint_url", f"http://127.0.0.1:{port}")
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    proc = pivot_b("run", "-r", "down", cwd="analysis", **env)
    assert "unavailable" in proc.stderr and "s3cr3t-value" not in proc.stderr
    assert executions(b) == ["prepare", "analyze"]
    proc = pivot_b("run", "-r", "down", "--force", "--no-fallback", cwd="analysis", rc=1, **env)
    assert "--no-fallback" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_is_a_ci_gate(machines) -> None:
    machines.publish(PARENT_CHILD, "--all")
    b, pivot_b = machines.clone()
    proc = machines.run(pivot_b, "verify", "--all")
    assert "All 2 stages are up to date" in proc.stdout
    assert executions(b) == [] and not (b / "shared/data.csv").exists()
    source = (b / "analysis/pipeline.py").read_text().replace("Processed", "Counted")
    (b / "analysis/pipeline.py").write_text(source)
    proc = machines.run(pivot_b, "verify", "--all", rc=1)
    (line,) = proc.stdout.splitlines()
    assert line.startswith("  ✗ analysis/analyze is not up to date (") and "code changed" in line
    assert line.endswith("): run `pivot run` and commit")
    assert proc.stderr == "Error: 1 problem(s) among 2 stage(s); see the list above.\n"
    machines.run(pivot_b, "run", "--all")
    proc = machines.run(pivot_b, "verify", "--all", rc=1)
    assert proc.stdout == (
        "  ✗ analysis/report.txt (analysis/analyze) is not on the remote: run `pivot push`\n"
    )
    assert proc.stderr == "Error: 1 problem(s) among 2 stage(s); see the list above.\n"
    machines.run(pivot_b, "push", "--all")
    machines.run(pivot_b, "verify", "--all")


def test_status_remote_says_where_outputs_are(local_machines) -> None:
    local_machines.publish(PARENT_CHILD, cwd="analysis")
    _, pivot_b = local_machines.clone()
    proc = local_machines.run(pivot_b, "status", "--remote", "--json", cwd="analysis")
    rows = {r["stage"]: r["outputs"] for r in json.loads(proc.stdout)}
    assert rows == {
        "data_prep/prepare": {"shared/data.csv": "remote"},
        "analysis/analyze": {"analysis/report.txt": "remote"},
    }
    local_machines.run(pivot_b, "pull")
    shown = local_machines.run(pivot_b, "status", "--remote").stdout
    assert "local" in shown and "shared/data.csv" in shown and "missing" not in shown


def test_push_and_pull_cover_the_current_pipeline_and_its_upstreams(local_machines) -> None:
    write_files(local_machines.a, PARENT_CHILD)
    local_machines.run(local_machines.pivot_a, "run", cwd="analysis")
    pushed = local_machines.run(local_machines.pivot_a, "push", "--json").stdout
    assert json.loads(pushed)["blobs"] == 1  # the root pipeline alone: shared/data.csv
    pushed = local_machines.run(local_machines.pivot_a, "push", "--json", cwd="analysis").stdout
    assert json.loads(pushed)["blobs"] == 1  # now only analysis/report.txt is new


def test_misconfigured_remote_is_an_error_not_a_fallback(local_machines) -> None:
    local_machines.publish(PARENT_CHILD, cwd="analysis")
    b, pivot_b = local_machines.clone()
    proc = pivot_b("run", "-r", "orgin", cwd="analysis", rc=1)
    assert re.fullmatch(
        r"Error: Unknown remote 'orgin' \(configured: [^)]+\)\. "
        r"Add it with `pivot remote add orgin URL`\.\n",
        proc.stderr,
    ), proc.stderr
    assert executions(b) == []


def test_push_with_blobs_nowhere_fails(local_machines) -> None:
    local_machines.publish(PARENT_CHILD, cwd="analysis")
    _, pivot_b = local_machines.clone()
    pivot_b("remote", "add", "empty", str(local_machines.tmp / "empty-store"))
    proc = pivot_b("push", "-r", "empty", cwd="analysis", rc=1)
    assert re.fullmatch(
        r"Error: \d+ blob\(s\) named by lock files are neither in the local cache nor on "
        r"'empty' \([^\n]+\) \(first: [0-9a-f]{16}\); everything else was pushed\. Run "
        r"`pivot run` \(or `pivot pull` on the machine that has them\) and push again\.\n",
        proc.stderr,
    ), proc.stderr


def test_noop_push_needs_no_fsspec_stack(machines) -> None:
    """The cached indexes already list everything: the push reads only the remote's
    identity object (on S3 through the presigned URL the first push recorded), so
    neither boto3 nor fsspec's S3 stack is imported."""
    from support import imported_heavy_modules

    machines.publish(PARENT_CHILD, "--all")
    os.environ.update(machines.env)
    try:
        heavy = imported_heavy_modules(machines.a, "push", "--all")
    finally:
        for key in machines.env:
            os.environ.pop(key)
    assert not {"s3fs", "aiobotocore", "boto3", "botocore"} & set(heavy), heavy
