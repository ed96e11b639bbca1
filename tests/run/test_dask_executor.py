"""`pivot run --executor dask`: stages on a real Dask cluster (a scheduler and two worker
processes on 127.0.0.1, each in its own temp folder) with SeaweedFS as the remote, the
only thing the coordinator and the workers share."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from dask_cluster import start_cluster, stop_cluster, wait_for_workers
from s3_servers import ACCESS_KEY, REGION, SECRET_KEY
from support import PYTHONPATH, PivotCLI, free_ports, process_alive, start_pivot, write_files

from pivot._racy import MARKER
from pivot._swept import MEMO
from pivot.run import lock_memo

pytestmark = pytest.mark.s3

# Each stage records where it ran (pid, parent pid, cwd) in $PROC_DIR, outside the
# project (the workers' PROC_DIR is the cluster's; a local run sets its own).
STAGES = """
import json, os, pathlib, time
from typing import Annotated
import pivot
from pivot import Dep, Out, loaders
from helpers import shout

p = pivot.Pipeline("demo")

def _where(name):
    folder = pathlib.Path(os.environ["PROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd()}
    (folder / f"{name}.json").write_text(json.dumps(record))

def make_big() -> Annotated[pathlib.Path, Out("big/data.bin")]:
    _where("make_big")
    out = pathlib.Path("big/data.bin")
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(os.urandom(0) + bytes(range(256)) * 4096)
    return out

def make_dir(src: Annotated[str, Dep("data/in.txt", loaders.Text())]) -> Annotated[pathlib.Path, Out("tree")]:
    _where("make_dir")
    for i in range(3):
        pathlib.Path("tree/sub").mkdir(parents=True, exist_ok=True)
        pathlib.Path(f"tree/sub/{i}.txt").write_text(shout(src) * (i + 1))
    return pathlib.Path("tree")

def _reader(i):
    def read(big: Annotated[bytes, Dep("big/data.bin", loaders.Bytes())],
             tree: Annotated[pathlib.Path, Dep("tree", loaders.PathOnly())]) -> Annotated[str, Out(f"out/r{i}.txt", loaders.Text())]:
        _where(f"read{i}")
        files = sorted(str(f.relative_to(tree)) for f in tree.rglob("*.txt"))
        return f"{len(big)} {big[:4].hex()} {files} {i}\\n"
    read.__name__ = f"read{i}"
    return read

p.register(make_big)
p.register(make_dir)
for i in range(4):
    p.register(_reader(i), name=f"read{i}")

def total(r0: Annotated[str, Dep("out/r0.txt", loaders.Text())],
          r3: Annotated[str, Dep("out/r3.txt", loaders.Text())]) -> Annotated[str, Out("out/total.txt", loaders.Text())]:
    _where("total")
    print("total sees", len(r0 + r3), "characters")
    return shout(r0 + r3)

p.register(total)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, seaweedfs):
    """One cluster for the module; its workers find the remote's credentials in their own
    environment (the coordinator never sends them). Workers see the `pivotfake`
    distribution at version 2.0 (the coordinator, in these tests, at 1.0)."""
    base = tmp_path_factory.mktemp("dask")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_CONFIG_FILE=str(base / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(base / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join(
            [PYTHONPATH, str(base / "site0"), str(_fake_dist(base / "site2", "2.0"))]
        ),
    )
    (base / "site0").mkdir()  # empty: a test adds a module there, ahead of site2's
    _fake_dist(base / "site2", "1.0", "pivotshadowed", "installed on the worker")
    env["PROC_DIR"] = str(base / "proc")
    running = start_cluster(base, env)
    try:
        yield running
    finally:
        stop_cluster(running)


def _fake_dist(
    site: pathlib.Path, version: str, name: str = "pivotfake", where: str = ""
) -> pathlib.Path:
    """A folder holding the distribution `name` at `version` (module and dist-info); its
    module's VERSION is `version`, its WHERE `where`."""
    (site / name).mkdir(parents=True, exist_ok=True)
    (site / name / "__init__.py").write_text(f"VERSION = {version!r}\nWHERE = {where!r}\n")
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    return site


def _configure(root: pathlib.Path, seaweedfs, cluster, executor_in_config: bool = True) -> None:
    bucket = seaweedfs.new_bucket()
    shared = {
        "default_remote": "weed",
        "remotes": {
            "weed": {
                "url": f"s3://{bucket}/cache",
                "endpoint_url": seaweedfs.endpoint,
                "region": REGION,
            }
        },
    }
    if executor_in_config:
        shared.update(executor="dask", dask={"scheduler": cluster.address, "retries": 0})
    (root / ".pivot" / "config.yaml").write_text(json.dumps(shared))
    local = {"remotes": {"weed": {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}}}
    (root / ".pivot" / "config.local.yaml").write_text(json.dumps(local))


def _project(root: pathlib.Path, seaweedfs, cluster) -> PivotCLI:
    write_files(
        root,
        {
            "helpers.py": "def shout(text):\n    return text.upper()\n",
            "data/in.txt": "hello\n",
            "pipeline.py": STAGES,
        },
    )
    _configure(root, seaweedfs, cluster)
    return PivotCLI(root)


def _where(cluster) -> dict[str, dict]:
    folder = cluster.worker_dirs[0].parent / "proc"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def _files(root: pathlib.Path, *folders: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for folder in folders
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def test_stages_run_on_workers_and_match_a_local_run(project, seaweedfs, cluster, tmp_path):
    pivot = _project(project, seaweedfs, cluster)
    proc_dir = str(tmp_path / "coordinator-proc")  # stays empty: nothing runs here
    before = {str(i): len(cluster.tasks(i)) for i in range(2)}

    result = pivot("run", PROC_DIR=proc_dir)
    assert result.stdout.count(" ran ") == 7, result.stdout
    assert "total sees" in result.stdout  # the stage's own output, sent back from its worker
    assert "(on " in result.stdout  # the worker that ran each stage

    # Every stage ran in a worker's scratch folder, in a child of the worker process.
    where = _where(cluster)
    assert set(where) == {"make_big", "make_dir", "read0", "read1", "read2", "read3", "total"}
    worker_dirs = [str(d / ".pivot-worker" / "scratch") for d in cluster.worker_dirs]
    for record in where.values():
        assert any(record["cwd"].startswith(d) for d in worker_dirs), record
        assert record["pid"] != os.getpid()
    assert not pathlib.Path(proc_dir).exists()

    # The same pipeline run locally gives the same bytes.
    local = tmp_path / "local"
    shutil.copytree(project, local, ignore=shutil.ignore_patterns(".pivot", "big", "out", "tree"))
    subprocess.run(
        [sys.executable, "-m", "pivot", "init"],
        cwd=local,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    PivotCLI(local)("run", "--no-remote", PROC_DIR=str(tmp_path / "local-proc"))
    assert _files(project, "big", "out", "tree") == _files(local, "big", "out", "tree")

    # A dep already in a worker's cache is not fetched again: each worker fetched the big
    # output at most once (the worker that made it, never).
    big_hash = json.loads((project / ".pivot/stages/demo/make_big.lock").read_text())["outs"][
        "big/data.bin"
    ]["hash"]
    for i in range(2):
        new = cluster.tasks(i)[before[str(i)] :]
        fetches = [t for t in new for digest in t["fetched"] if digest == big_hash]
        assert len(fetches) <= 1, new
        if any(t["stage"] == "demo/make_big" for t in new):
            assert fetches == []
        # Each task named where its inputs lie on the remote (the coordinator pushed the
        # code and data.txt, the workers the outputs): no worker listed the remote.
        assert not any(t["fetch_listed"] or t["push_listed"] for t in new), new

    # A fresh clone (sources, config and lock files, no cache) restores without running.
    clone = tmp_path / "clone"
    shutil.copytree(
        project,
        clone,
        ignore=shutil.ignore_patterns("cache", "state.db*", "tmp", "big", "out", "tree"),
    )
    result = PivotCLI(clone)("run", "--executor", "local", PROC_DIR=str(tmp_path / "clone-proc"))
    assert " ran " not in result.stdout and "restored" in result.stdout, result.stdout
    assert _files(clone, "out") == _files(project, "out")

    # Nothing to do: nothing is submitted.
    tasks = len(cluster.all_tasks())
    assert "up to date" in pivot("run", PROC_DIR=proc_dir).stdout
    assert len(cluster.all_tasks()) == tasks

    # A code change on the coordinator re-runs on the cluster what it reaches.
    (project / "helpers.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    result = pivot("run", PROC_DIR=proc_dir)
    assert "make_dir" in result.stdout and "total" in result.stdout
    assert (project / "out/total.txt").read_text().endswith("!")
    assert (project / "tree/sub/0.txt").read_text() == "HELLO\n!"


EARLY_LATE = """
import time
from typing import Annotated
import pivot
from pivot import Out, loaders

p = pivot.Pipeline("el")

def early() -> Annotated[bytes, Out("early.bin", loaders.Bytes())]:
    return bytes(range(256)) * 4096

def late() -> Annotated[str, Out("late.txt", loaders.Text())]:
    time.sleep(3)  # the early output is fetched while this runs (prefetch.GATHER: 1 s)
    return "late\\n"

p.register(early)
p.register(late)
"""


def test_outputs_fetched_while_the_run_goes_on_are_checked_out(project, seaweedfs, cluster):
    """The early stage's output is fetched in the background while the late one runs, the
    late one's at the end: both are checked out intact, recorded in the locks, and no
    temporary file is left."""
    write_files(project, {"pipeline.py": EARLY_LATE})
    _configure(project, seaweedfs, cluster)
    pivot = PivotCLI(project)

    result = pivot("run")
    assert result.stdout.count(" ran ") == 2, result.stdout
    assert (project / "early.bin").read_bytes() == bytes(range(256)) * 4096
    assert (project / "late.txt").read_text() == "late\n"
    tmp = project / ".pivot" / "tmp"
    kept = {MARKER, MEMO, lock_memo.NAME}  # the racy marker and two memos, written whole
    left = [
        p
        for p in tmp.rglob("*")
        if p.is_file() and p.parent.name != "fingerprint" and p.name not in kept
    ]
    assert [p.name for p in left] == ["command.lock"], left
    # What was fetched is what the locks name: a second run restores nothing and runs
    # nothing, and `verify` finds the cache intact.
    assert "up to date" in pivot("run").stdout
    assert pivot("verify").returncode == 0


CHAIN = """
from typing import Annotated
import pivot
from pivot import Dep, Out, loaders

p = pivot.Pipeline("chain")

def first() -> Annotated[str, Out("c/0.txt", loaders.Text())]:
    return "zero\\n"

def second(prev: Annotated[str, Dep("c/0.txt", loaders.Text())]) -> Annotated[str, Out("c/1.txt", loaders.Text())]:
    return prev + "one\\n"

def third(prev: Annotated[str, Dep("c/1.txt", loaders.Text())]) -> Annotated[str, Out("c/2.txt", loaders.Text())]:
    return prev + "two\\n"

p.register(first)
p.register(second)
p.register(third)
"""


def test_a_chain_runs_on_the_worker_holding_its_deps(project, seaweedfs, cluster):
    """Downstream stages are submitted with their upstream's task as a Dask dependency:
    they run on the worker that made their dep (fetching nothing), each once; one whose
    upstream re-ran to the same output is skipped, never run on a worker."""
    write_files(project, {"pipeline.py": CHAIN})
    _configure(project, seaweedfs, cluster)
    pivot = PivotCLI(project)

    def new_tasks(before: list[int]) -> list[list[dict]]:
        return [
            [t for t in cluster.tasks(i)[before[i] :] if t["stage"].startswith("chain/")]
            for i in range(2)
        ]

    def out_hash(stage: str, path: str) -> str:
        lock = json.loads((project / f".pivot/stages/chain/{stage}.lock").read_text())
        return lock["outs"][path]["hash"]

    before = [len(cluster.tasks(i)) for i in range(2)]
    result = pivot("run")
    assert result.stdout.count(" ran ") == 3, result.stdout
    assert (project / "c/2.txt").read_text() == "zero\none\ntwo\n"
    ran = new_tasks(before)
    # All three on one worker, each once; the downstream ones fetched none of their deps.
    assert sorted(len(tasks) for tasks in ran) == [0, 3], ran
    tasks = {t["stage"]: t for t in ran[0] + ran[1]}
    assert out_hash("first", "c/0.txt") not in tasks["chain/second"]["fetched"]
    assert out_hash("second", "c/1.txt") not in tasks["chain/third"]["fetched"]

    # `first` changes but gives the same output: it runs, the others are skipped (the
    # worker holding the chained tasks saw their lock's run key and did not run them).
    (project / "pipeline.py").write_text(CHAIN.replace('return "zero', 'return "ze" + "ro'))
    before = [len(cluster.tasks(i)) for i in range(2)]
    result = pivot("run")
    assert result.stdout.count(" ran ") == 1 and "chain/first" in result.stdout, result.stdout
    assert [t["stage"] for tasks in new_tasks(before) for t in tasks] == ["chain/first"]

    # A new output re-runs the chain, each stage once, with what the worker computed.
    (project / "pipeline.py").write_text(CHAIN.replace('return "zero', 'return "ZERO'))
    before = [len(cluster.tasks(i)) for i in range(2)]
    result = pivot("run")
    assert result.stdout.count(" ran ") == 3, result.stdout
    assert (project / "c/2.txt").read_text() == "ZERO\none\ntwo\n"
    stages = sorted(t["stage"] for tasks in new_tasks(before) for t in tasks)
    assert stages == ["chain/first", "chain/second", "chain/third"]
    assert "up to date" in pivot("run").stdout


def test_a_chained_stage_decided_not_to_run_is_stopped_on_its_worker(
    project, seaweedfs, cluster, tmp_path
):
    """A stage chained onto its upstream's task starts on the worker as soon as the
    upstream ends; when the coordinator then restores it instead (its run record is on
    the remote, its lock is gone), the cancelled task's stage process is killed, not left
    to run to its end."""
    marker = tmp_path / "second.pid"
    slow = tmp_path / "slow"
    pipeline = f"""
        import os, pathlib, time
        from typing import Annotated
        import pivot
        from pivot import Dep, Out, loaders

        p = pivot.Pipeline("drop")

        def first() -> Annotated[str, Out("c/0.txt", loaders.Text())]:
            return "zero"

        def second(prev: Annotated[str, Dep("c/0.txt", loaders.Text())]) -> Annotated[pathlib.Path, Out("c/1.bin")]:
            pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))
            if os.path.exists({str(slow)!r}):
                time.sleep(120)
            pathlib.Path("c/1.bin").write_bytes(bytes(range(256)) * (1 << 18))  # 64 MB
            return pathlib.Path("c/1.bin")

        p.register(first)
        p.register(second)
        """
    write_files(project, {"pipeline.py": pipeline})
    _configure(project, seaweedfs, cluster)
    pivot = PivotCLI(project)
    assert pivot("run").stdout.count(" ran ") == 2

    # `first` changes but gives the same output; `second` has its run record on the
    # remote only (no lock, an empty local cache), so the coordinator restores it, and
    # fetching its 64 MB takes longer than the worker takes to start it.
    (project / "pipeline.py").write_text(
        (project / "pipeline.py").read_text().replace('return "zero"', 'return "ze" + "ro"')
    )
    (project / ".pivot/stages/drop/second.lock").unlink()
    shutil.rmtree(project / ".pivot/cache")
    marker.unlink()
    slow.touch()
    result = pivot("run")
    assert "drop/first" in result.stdout and "restored" in result.stdout, result.stdout
    assert (project / "c/1.bin").stat().st_size == 64 << 20
    pid = int(marker.read_text())  # the cancelled task had started the stage
    deadline = time.monotonic() + 30
    while process_alive(pid):
        assert time.monotonic() < deadline, f"the cancelled stage process {pid} still runs"
        time.sleep(0.2)


def test_fingerprint_mismatch_is_refused(project, seaweedfs, cluster, tmp_path):
    write_files(
        project,
        {
            "pipeline.py": """
            from typing import Annotated
            import pivot, pivotfake
            from pivot import Out, loaders

            p = pivot.Pipeline("dist")

            def versioned() -> Annotated[str, Out("v.txt", loaders.Text())]:
                return pivotfake.VERSION

            p.register(versioned)
            """
        },
    )
    _configure(project, seaweedfs, cluster)
    site = _fake_dist(tmp_path / "site1", "1.0")
    result = PivotCLI(project)("run", rc=1, PYTHONPATH=f"{PYTHONPATH}{os.pathsep}{site}")
    assert "dist/versioned" in result.stderr, result.stderr
    assert "dist:pivotfake (coordinator: 1.0, worker: 2.0)" in result.stderr, result.stderr
    assert not (project / "v.txt").exists()
    assert not (project / ".pivot/stages/dist/versioned.lock").exists()


def test_a_module_added_ahead_of_one_a_stage_server_imported_is_used(
    project, seaweedfs, cluster, tmp_path
):
    """Worker0 keeps its stage server for the next run of the same code; a package placed
    on its `sys.path` ahead of the one that server imported (same name and version) is
    what a new process would import, so the next run's stage runs it."""
    write_files(
        project,
        {
            "pipeline.py": """
            import os
            from typing import Annotated
            import pivot, pivotshadowed
            from pivot import Out, loaders

            p = pivot.Pipeline("shadow")

            def where() -> Annotated[str, Out("where.txt", loaders.Text())]:
                return f"{pivotshadowed.WHERE}, server {os.getppid()}"

            p.register(where, resources={"GPU": 1})
            """
        },
    )
    _configure(project, seaweedfs, cluster)
    site = _fake_dist(tmp_path / "site1", "1.0", "pivotshadowed", "on the coordinator")
    pivot = PivotCLI(project)
    env = {"PYTHONPATH": f"{PYTHONPATH}{os.pathsep}{site}"}
    pivot("run", **env)
    first = (project / "where.txt").read_text()
    assert first.startswith("installed on the worker, server ")
    pivot("run", "--force", **env)
    assert (project / "where.txt").read_text() == first  # the same server: nothing changed

    _fake_dist(cluster.worker_dirs[0].parent / "site0", "1.0", "pivotshadowed", "ahead")
    pivot("run", "--force", **env)
    assert (project / "where.txt").read_text().startswith("ahead, server ")


def test_a_worker_home_removed_and_a_new_remote_between_two_runs(
    project, seaweedfs, cluster, tmp_path
):
    """Worker0 keeps its home project (cache, state db) across tasks; its folder removed
    between two runs (to free space) and the project moved to a new remote, the next run
    of the same code fetches it again into a new home, from the new remote, and pushes
    there: a fresh clone of the new remote's config restores the outputs."""
    write_files(
        project,
        {
            "pipeline.py": """
            from typing import Annotated
            import pivot
            from pivot import Out, loaders

            p = pivot.Pipeline("home")

            def upper() -> Annotated[str, Out("up.txt", loaders.Text())]:
                return "first".upper()

            p.register(upper, resources={"GPU": 1})
            """,
        },
    )
    _configure(project, seaweedfs, cluster)
    pivot = PivotCLI(project)
    pivot("run")
    assert (project / "up.txt").read_text() == "FIRST"
    home = cluster.worker_dirs[0] / ".pivot-worker" / "home"
    assert (home / ".pivot" / "cache").is_dir()

    shutil.rmtree(home)
    _configure(project, seaweedfs, cluster)  # a new bucket
    pivot("run", "--force")  # the same code bundle, which the old home held whole
    assert (project / "up.txt").read_text() == "FIRST"
    assert (home / ".pivot" / "cache").is_dir()
    last = cluster.tasks(0)[-1]
    assert last["stage"] == "home/upper" and last["ok"] and last["fetched"], last  # the code

    clone = tmp_path / "clone"
    shutil.copytree(project, clone, ignore=shutil.ignore_patterns("cache", "state.db*", "tmp"))
    (clone / "up.txt").unlink()
    result = PivotCLI(clone)("run", "--executor", "local")
    assert " ran " not in result.stdout and "restored" in result.stdout, result.stdout
    assert (clone / "up.txt").read_text() == "FIRST"


def test_failures_resources_and_keep_going(project, seaweedfs, cluster):
    write_files(
        project,
        {
            "pipeline.py": """
            import os
            from typing import Annotated
            import pivot
            from pivot import Dep, Out, loaders

            p = pivot.Pipeline("f")

            def broken() -> Annotated[str, Out("broken.txt", loaders.Text())]:
                raise ValueError("no good input")

            def after(x: Annotated[str, Dep("broken.txt", loaders.Text())]) -> Annotated[str, Out("after.txt", loaders.Text())]:
                return x

            def fine() -> Annotated[str, Out("fine.txt", loaders.Text())]:
                return os.getcwd()

            p.register(broken)
            p.register(after)
            p.register(fine, resources={"GPU": 1})
            """
        },
    )
    _configure(project, seaweedfs, cluster)
    pivot = PivotCLI(project)
    result = pivot("run", "--keep-going", rc=1)
    assert "f/broken" in result.stderr and "raised ValueError" in result.stderr
    # The user's frame, in the coordinator's project, and the worker that ran it.
    assert f'File "{project}/pipeline.py", line 9, in broken' in result.stderr, result.stderr
    assert "It ran on the Dask worker" in result.stderr
    assert "ValueError: no good input" in result.stderr
    assert "blocked" in result.stdout and "f/after" in result.stdout
    # `fine` asked for a GPU: only worker0 offers one.
    assert (project / "fine.txt").read_text().startswith(str(cluster.worker_dirs[0]))
    assert not (project / "broken.txt").exists()

    # Resources no worker offers: refused before anything is submitted.
    text = (
        (project / "pipeline.py").read_text().replace('{"GPU": 1}', '{"GPU": 1, "memory": "1TB"}')
    )
    (project / "pipeline.py").write_text(text)
    tasks = len(cluster.all_tasks())
    result = pivot("run", "--force", "f/fine", rc=1)
    assert "f/fine" in result.stderr and "memory=1TB" in result.stderr
    assert "Nothing was submitted" in result.stderr
    assert len(cluster.all_tasks()) == tasks


def test_resources_from_pivot_yaml(project, seaweedfs, cluster):
    """`resources:` in a pivot.yaml, for an annotated and a plain function, as from
    `register(..., resources=...)`: GPU=1 runs only on worker0, which offers it."""
    write_files(
        project,
        {
            "stages.py": """
            import os
            from typing import Annotated
            from pivot import Out, loaders

            def annotated() -> Annotated[str, Out("a.txt", loaders.Text())]:
                return os.getcwd()

            def plain(out):
                with open(out, "w") as f:
                    f.write(os.getcwd())
            """,
            "pivot.yaml": """
            name: y
            stages:
              annotated:
                python: stages.annotated
                resources: {GPU: 1}
              plain:
                python: stages.plain
                outs: {out: p.txt}
                resources: {GPU: 1}
            """,
        },
    )
    _configure(project, seaweedfs, cluster)
    pivot = PivotCLI(project)
    pivot("run")
    for name in ("a.txt", "p.txt"):
        assert (project / name).read_text().startswith(str(cluster.worker_dirs[0])), name

    text = (project / "pivot.yaml").read_text().replace("{GPU: 1}\n", "{GPU: 1, memory: 1TB}\n", 1)
    (project / "pivot.yaml").write_text(text)
    tasks = len(cluster.all_tasks())
    result = pivot("run", "--force", rc=1)
    assert "y/annotated" in result.stderr and "memory=1TB" in result.stderr
    assert "Nothing was submitted" in result.stderr and "Traceback" not in result.stderr
    assert len(cluster.all_tasks()) == tasks


def test_no_reachable_remote_is_an_error_before_submitting(project, seaweedfs, cluster):
    write_files(
        project,
        {
            "pipeline.py": """
            from typing import Annotated
            import pivot
            from pivot import Out, loaders

            p = pivot.Pipeline("n")

            def one() -> Annotated[str, Out("one.txt", loaders.Text())]:
                return "1"

            p.register(one)
            """
        },
    )
    _configure(project, seaweedfs, cluster)
    config = json.loads((project / ".pivot/config.yaml").read_text())
    config["remotes"]["weed"]["endpoint_url"] = f"http://127.0.0.1:{free_ports(1)[0]}"
    (project / ".pivot/config.yaml").write_text(json.dumps(config))
    tasks = len(cluster.all_tasks())
    result = PivotCLI(project)("run", rc=1)
    assert "The Dask executor needs the remote 'weed'" in result.stderr
    assert len(cluster.all_tasks()) == tasks
    assert "Traceback" not in result.stderr


def test_ctrl_c_cancels_the_running_stage(project, seaweedfs, cluster, tmp_path):
    marker = tmp_path / "stage.pid"
    write_files(
        project,
        {
            "pipeline.py": f"""
            import os, time
            from typing import Annotated
            import pivot
            from pivot import Out, loaders

            p = pivot.Pipeline("c")

            def slow() -> Annotated[str, Out("slow.txt", loaders.Text())]:
                open({str(marker)!r}, "w").write(str(os.getpid()))
                time.sleep(120)
                return "done"

            p.register(slow)
            """
        },
    )
    _configure(project, seaweedfs, cluster, executor_in_config=False)
    _ctrl_c_once_marked(
        project, ["--executor", "dask", "--scheduler", cluster.address], marker, "stage process"
    )
    assert not (project / ".pivot/stages/c/slow.lock").exists()


def test_ctrl_c_while_a_worker_imports_the_pipeline(project, seaweedfs, cluster, tmp_path):
    """The worker's stage server imports the pipeline file before it forks the stage; a
    Ctrl-C during that import stops it too."""
    marker = tmp_path / "importer.pid"
    write_files(
        project,
        {
            "pipeline.py": f"""
            import os, time
            from typing import Annotated
            import pivot
            from pivot import Out, loaders

            if ".pivot-worker" in os.getcwd():  # on a worker only
                open({str(marker)!r}, "w").write(str(os.getpid()))
                time.sleep(120)

            p = pivot.Pipeline("i")

            def one() -> Annotated[str, Out("one.txt", loaders.Text())]:
                return "1"

            p.register(one)
            """
        },
    )
    _configure(project, seaweedfs, cluster)
    _ctrl_c_once_marked(project, [], marker, "stage server")
    assert not (project / ".pivot/stages/i/one.lock").exists()


class _Gate:
    """A TCP relay on 127.0.0.1 to an S3 server that holds every byte while closed (a
    push through it stalls until it opens again), or drops every connection while
    refusing (a push through it fails)."""

    def __init__(self, endpoint: str) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        self._target = (parts.hostname, parts.port)
        self._open = threading.Event()
        self._open.set()
        self._refusing = False
        self._server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def refuse(self) -> None:
        self._refusing = True

    def stop(self) -> None:
        self._open.set()
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if self._refusing:
                conn.close()
                continue
            upstream = socket.create_connection(self._target)
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while (data := src.recv(1 << 16)) and not self._refusing:
                self._open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _gated_chain(project, seaweedfs, cluster, marks: pathlib.Path) -> _Gate:
    """The chain `one` -> `two` (each marks the worker process running it in `marks`,
    `one` after a second), its remote reached through a `_Gate`."""
    write_files(
        project,
        {
            "pipeline.py": f"""
            import os, pathlib, time
            from typing import Annotated
            import pivot
            from pivot import Dep, Out, loaders

            p = pivot.Pipeline("g")

            def _mark(name):
                # The stage's parent is the worker's stage server, whose parent is the
                # worker process.
                stat = pathlib.Path(f"/proc/{{os.getppid()}}/stat").read_text()
                worker = stat.rsplit(")", 1)[1].split()[1]
                folder = pathlib.Path({str(marks)!r})
                folder.mkdir(exist_ok=True)
                (folder / name).write_text(worker)

            def one() -> Annotated[str, Out("made/one.txt", loaders.Text())]:
                _mark("one")
                time.sleep(1)
                return "one\\n"

            def two(prev: Annotated[str, Dep("made/one.txt", loaders.Text())]) -> Annotated[str, Out("made/two.txt", loaders.Text())]:
                _mark("two")
                return prev + "two\\n"

            p.register(one)
            p.register(two)
            """
        },
    )
    _configure(project, seaweedfs, cluster)
    gate = _Gate(seaweedfs.endpoint)
    config = json.loads((project / ".pivot/config.yaml").read_text())
    config["remotes"]["weed"]["endpoint_url"] = gate.endpoint
    (project / ".pivot/config.yaml").write_text(json.dumps(config))
    return gate


def _wait_for_mark(run: subprocess.Popen, mark: pathlib.Path, deadline: float) -> None:
    """Wait until the stage that writes `mark` has started, the run still going."""
    while not mark.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.05)


def test_a_worker_killed_before_its_push_ended_leaves_no_lock(
    project, seaweedfs, cluster, tmp_path
):
    """A task returns once its stage ran and pushes the outputs behind it: a worker killed
    after `one`'s task returned (its downstream `two` already started on that worker) but
    before the push reached the remote leaves no lock for either stage; run again, both
    are recorded and a fresh clone restores them from the remote without running."""
    marks = tmp_path / "marks"
    gate = _gated_chain(project, seaweedfs, cluster, marks)
    try:
        run = start_pivot(project, "run")
        deadline = time.monotonic() + 90
        _wait_for_mark(run, marks / "one", deadline)
        gate.close()  # `one` sleeps: its push will stall
        _wait_for_mark(run, marks / "two", deadline)  # Dask started `two`: `one`'s task returned
        worker = int((marks / "two").read_text())
        assert worker == int((marks / "one").read_text())
        os.kill(worker, signal.SIGKILL)
        time.sleep(0.5)
        gate.open()
        _, err = run.communicate(timeout=120)
        assert run.returncode == 1, err
        assert "g/one" in err and "worker running it died" in err, err
        assert not (project / ".pivot/stages/g/one.lock").exists()
        assert not (project / ".pivot/stages/g/two.lock").exists()
        wait_for_workers(cluster, 2)

        result = PivotCLI(project)("run")
        assert result.stdout.count(" ran ") == 2, result.stdout
        assert (project / "made/two.txt").read_text() == "one\ntwo\n"
        clone = tmp_path / "clone"
        shutil.copytree(
            project, clone, ignore=shutil.ignore_patterns("cache", "state.db*", "tmp", "made")
        )
        result = PivotCLI(clone)("run", "--executor", "local")
        assert " ran " not in result.stdout and "restored" in result.stdout, result.stdout
        assert (clone / "made/two.txt").read_text() == "one\ntwo\n"
    finally:
        gate.stop()


def test_a_push_that_fails_behind_its_task_fails_the_stage(project, seaweedfs, cluster, tmp_path):
    """The push behind a returned task fails (the remote drops every connection): the
    stage fails with the push's error, and neither it nor `two`, which already ran on
    that worker, gets a lock."""
    marks = tmp_path / "marks"
    gate = _gated_chain(project, seaweedfs, cluster, marks)
    try:
        run = start_pivot(project, "run")
        deadline = time.monotonic() + 90
        _wait_for_mark(run, marks / "one", deadline)
        gate.refuse()  # `one` sleeps: its push will fail
        _, err = run.communicate(timeout=180)
    finally:
        gate.stop()
    assert run.returncode == 1, err
    assert "g/one" in err and "could not be pushed" in err, err
    assert not (project / ".pivot/stages/g/one.lock").exists()
    assert not (project / ".pivot/stages/g/two.lock").exists()


def test_a_killed_worker_is_retried_then_fails(project, seaweedfs, cluster, tmp_path):
    """Last in the module: it kills workers (their nannies start new ones)."""
    kills = tmp_path / "kills"
    write_files(
        project,
        {
            "pipeline.py": f"""
            import os, pathlib, signal
            from typing import Annotated
            import pivot
            from pivot import Out, loaders

            p = pivot.Pipeline("k")

            def fragile(params: dict) -> Annotated[str, Out("fragile.txt", loaders.Text())]:
                log = pathlib.Path({str(kills)!r})
                done = len(log.read_text()) if log.exists() else 0
                if done < params["kills"]:
                    with log.open("a") as f:
                        f.write("x")
                    # The stage's parent is the worker's stage server, whose parent is
                    # the worker process.
                    stat = pathlib.Path(f"/proc/{{os.getppid()}}/stat").read_text()
                    os.kill(int(stat.rsplit(")", 1)[1].split()[1]), signal.SIGKILL)
                return f"survived {{done}} kill(s)"

            p.register(fragile, params={{"kills": 1}})
            """
        },
    )
    _configure(project, seaweedfs, cluster)
    pivot = PivotCLI(project)
    config = json.loads((project / ".pivot/config.yaml").read_text())
    config["dask"]["retries"] = 1
    (project / ".pivot/config.yaml").write_text(json.dumps(config))
    pivot("run")
    assert (project / "fragile.txt").read_text() == "survived 1 kill(s)"
    wait_for_workers(cluster, 2)

    # With no retries left, the stage fails naming the dead worker.
    config["dask"]["retries"] = 0
    (project / ".pivot/config.yaml").write_text(json.dumps(config))
    kills.unlink()
    result = pivot("run", "--force", rc=1)
    assert "k/fragile" in result.stderr and "worker running it died" in result.stderr
    assert not (project / "fragile.txt").exists()
    wait_for_workers(cluster, 2)


def _ctrl_c_once_marked(project, run_args, marker, what) -> None:
    """Start `pivot run RUN_ARGS`, press Ctrl-C once a process on a worker wrote its pid to
    `marker`: pivot exits 130 and that process (`what`) is stopped."""
    run = subprocess.Popen(
        [sys.executable, "-m", "pivot", "run", *run_args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)
    pid = int(marker.read_text())
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    while process_alive(pid):
        assert time.monotonic() < deadline + 60, f"{what} {pid} still runs"
        time.sleep(0.2)
