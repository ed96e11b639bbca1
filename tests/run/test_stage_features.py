"""Loaders, params, directory outputs, parallel stages."""

from __future__ import annotations

import json
import pathlib
import pickle

import yaml
from support import COUNTER, executions, write_files

from pivot.define.loaders import Pickle

HEADER = (
    """
import dataclasses
import pathlib
from typing import Annotated, TypedDict

import pivot
"""
    + COUNTER
)


def test_every_builtin_loader_round_trips(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("loaders")

class Outs(TypedDict):
    text: Annotated[str, pivot.Out("o/text.txt", pivot.loaders.Text())]
    raw: Annotated[bytes, pivot.Out("o/raw.bin", pivot.loaders.Bytes())]
    js: Annotated[dict, pivot.Out("o/data.json", pivot.loaders.JSON())]
    ym: Annotated[dict, pivot.Out("o/data.yaml", pivot.loaders.YAML())]
    pk: Annotated[object, pivot.Out("o/data.pkl", pivot.loaders.Pickle())]
    df: Annotated[object, pivot.Out("o/table.csv", pivot.loaders.CSV())]

def produce() -> Outs:
    import pandas
    return Outs(text="hi", raw=b"\\x00\\x01", js={"a": 1}, ym={"b": [1, 2]}, pk={1, 2},
                df=pandas.DataFrame({"x": [1, 2]}))

class Summary(TypedDict):
    summary: Annotated[dict, pivot.Out("summary.json", pivot.loaders.JSON())]

def consume(
    text: Annotated[str, pivot.Dep("o/text.txt", pivot.loaders.Text())],
    raw: Annotated[bytes, pivot.Dep("o/raw.bin", pivot.loaders.Bytes())],
    js: Annotated[dict, pivot.Dep("o/data.json", pivot.loaders.JSON())],
    ym: Annotated[dict, pivot.Dep("o/data.yaml", pivot.loaders.YAML())],
    pk: Annotated[set, pivot.Dep("o/data.pkl", pivot.loaders.Pickle())],
    df: Annotated[object, pivot.Dep("o/table.csv", pivot.loaders.CSV())],
) -> Summary:
    return Summary(summary={"text": text, "raw": list(raw), "js": js, "ym": ym,
                            "pk": sorted(pk), "df": int(df["x"].sum())})

pipeline.register(produce)
pipeline.register(consume)
"""
        },
    )
    pivot("run")
    assert json.loads((project / "summary.json").read_text()) == {
        "text": "hi",
        "raw": [0, 1],
        "js": {"a": 1},
        "ym": {"b": [1, 2]},
        "pk": [1, 2],
        "df": 3,
    }
    assert yaml.safe_load((project / "o/data.yaml").read_text()) == {"b": [1, 2]}
    assert pickle.loads((project / "o/data.pkl").read_bytes()) == {1, 2}


def test_custom_loader_subclass(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
@dataclasses.dataclass(frozen=True)
class Lines(pivot.loaders.Loader):
    def load(self, path):
        return path.read_text().splitlines()

    def save(self, value, path):
        path.write_text("\\n".join(value) + "\\n")

pipeline = pivot.Pipeline("custom")

def s() -> Annotated[list, pivot.Out("lines.txt", Lines())]:
    return ["a", "b"]

pipeline.register(s)
"""
        },
    )
    pivot("run")
    assert (project / "lines.txt").read_text() == "a\nb\n"


PARAMS = (
    HEADER
    + """
@dataclasses.dataclass
class TrainParams:
    rate: float = 0.1
    epochs: int = 3

pipeline = pivot.Pipeline("params")

def train(params: TrainParams) -> Annotated[dict, pivot.Out("model.json", pivot.loaders.JSON())]:
    _count("train")
    return {"rate": params.rate, "epochs": params.epochs}

def report(params: dict) -> Annotated[str, pivot.Out("report.txt", pivot.loaders.Text())]:
    _count("report")
    return params["title"]

pipeline.register(train)
pipeline.register(report, params={"title": "v1"})
"""
)


def test_params_are_in_lock_and_key(project, pivot) -> None:
    write_files(project, {"pipeline.py": PARAMS})
    pivot("run")
    lock = json.loads((project / ".pivot/stages/params/train.lock").read_text())
    assert lock["params"] == {"rate": 0.1, "epochs": 3}
    assert json.loads((project / "model.json").read_text()) == {"rate": 0.1, "epochs": 3}
    source = (project / "pipeline.py").read_text().replace('"title": "v1"', '"title": "v2"')
    (project / "pipeline.py").write_text(source)
    assert "param changed: title" in pivot("status").stdout
    pivot("run")
    assert sorted(executions(project)) == ["report", "report", "train"]
    assert (project / "report.txt").read_text() == "v2"


def test_directory_output_is_cached_as_a_tree(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("dirs")

class Outs(TypedDict):
    shards: Annotated[pathlib.Path, pivot.Out("shards", pivot.loaders.PathOnly())]

def split() -> Outs:
    _count("split")
    root = pathlib.Path("shards")
    (root / "nested").mkdir(parents=True)
    for i in range(5):
        (root / f"part{i}.txt").write_text(f"row {i}\\n")
    (root / "nested" / "deep.txt").write_text("deep\\n")
    return Outs(shards=root)

def merge(shards: Annotated[pathlib.Path, pivot.Dep("shards", pivot.loaders.PathOnly())]) -> Annotated[str, pivot.Out("merged.txt", pivot.loaders.Text())]:
    _count("merge")
    return "".join(p.read_text() for p in sorted(shards.rglob("*.txt")))

pipeline.register(split)
pipeline.register(merge)
"""
        },
    )
    pivot("run")
    lock = json.loads((project / ".pivot/stages/dirs/split.lock").read_text())
    assert lock["outs"]["shards"]["kind"] == "dir"
    merged = (project / "merged.txt").read_text()
    import shutil

    shutil.rmtree(project / "shards")
    assert "restored" in pivot("run").stdout
    assert (project / "shards/nested/deep.txt").read_text() == "deep\n"
    (project / "shards/part0.txt").write_text("edited\n")
    refused = pivot("run", rc=1)
    assert "shards/part0.txt" in refused.stderr and "--force" in refused.stderr
    pivot("checkout", "--force")
    assert (project / "shards/part0.txt").read_text() == "row 0\n"
    assert (project / "merged.txt").read_text() == merged
    assert executions(project) == ["split", "merge"]


def test_independent_stages_run_in_parallel(project, pivot) -> None:
    """Each stage waits for the other to have started: only a parallel run can finish."""
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import time

pipeline = pivot.Pipeline("par")

def rendezvous(me, other):
    pathlib.Path(f"{me}.started").write_text("1")
    deadline = time.time() + 20
    while not pathlib.Path(f"{other}.started").exists():
        if time.time() > deadline:
            raise TimeoutError(f"{other} never started while {me} was running")
        time.sleep(0.01)
    return me

def a() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    return rendezvous("a", "b")

def b() -> Annotated[str, pivot.Out("b.txt", pivot.loaders.Text())]:
    return rendezvous("b", "a")

pipeline.register(a)
pipeline.register(b)
"""
        },
    )
    pivot("run", "-j", "2")
    assert (project / "a.txt").read_text() == "a" and (project / "b.txt").read_text() == "b"


def test_stage_runs_in_its_pipeline_directory(project, pivot) -> None:
    write_files(
        project,
        {
            "sub/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("sub")

def where() -> Annotated[str, pivot.Out("cwd.txt", pivot.loaders.Text())]:
    import os
    return os.getcwd()

pipeline.register(where)
"""
        },
    )
    pivot("run", cwd="sub")
    assert (
        pathlib.Path((project / "sub/cwd.txt").read_text()).resolve() == (project / "sub").resolve()
    )


def test_stages_do_not_share_global_state(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import os

pipeline = pivot.Pipeline("iso")

def first() -> Annotated[str, pivot.Out("first.txt", pivot.loaders.Text())]:
    os.environ["PIVOT_TEST_LEAK"] = "leaked"
    return "1"

def second(x: Annotated[str, pivot.Dep("first.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("second.txt", pivot.loaders.Text())]:
    return os.environ.get("PIVOT_TEST_LEAK", "clean")

pipeline.register(first)
pipeline.register(second)
"""
        },
    )
    pivot("run", "-j", "1")
    assert (project / "second.txt").read_text() == "clean"


def test_each_stage_runs_in_its_own_process_and_none_outlives_the_run(project) -> None:
    import os
    import subprocess
    import sys
    import time

    from support import PYTHONPATH

    stages = "".join(
        f"""
def s{i}({"" if i == 0 else f'x: Annotated[str, pivot.Dep("pid{i - 1}.txt", pivot.loaders.Text())]'}) -> Annotated[str, pivot.Out("pid{i}.txt", pivot.loaders.Text())]:
    return str(os.getpid())

pipeline.register(s{i})
"""
        for i in range(4)
    )
    write_files(
        project, {"pipeline.py": HEADER + "import os\npipeline = pivot.Pipeline('pids')\n" + stages}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pivot", "run", "-j", "1"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pids = {(project / f"pid{i}.txt").read_text() for i in range(4)}
    assert len(pids) == 4 and str(proc.pid) not in pids

    def in_session() -> list[str]:
        found = []
        for entry in pathlib.Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[3] == str(proc.pid) and fields[0] != "Z":  # same session, not a zombie
                found.append(entry.name)
        return found

    deadline = time.time() + 10
    while in_session() and time.time() < deadline:
        time.sleep(0.05)
    assert in_session() == []


def test_a_killed_spare_stage_process_does_not_break_the_run(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import os, pathlib, signal, time

pipeline = pivot.Pipeline("spares")

def siblings():
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == os.getppid() and stat[0] != "Z":
                found.append(int(entry.name))
    return found

def first() -> Annotated[str, pivot.Out("first.txt", pivot.loaders.Text())]:
    deadline = time.time() + 5
    while not siblings() and time.time() < deadline:  # the worker forks the next one
        time.sleep(0.01)
    for pid in siblings():
        os.kill(pid, signal.SIGKILL)
    return "killed the process waiting for the next stage"

def second(x: Annotated[str, pivot.Dep("first.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("second.txt", pivot.loaders.Text())]:
    return x + ", and ran anyway"

pipeline.register(first)
pipeline.register(second)
"""
        },
    )
    pivot("run", "-j", "1")
    assert (project / "second.txt").read_text().endswith("and ran anyway")


def test_stage_that_changes_directory_still_saves_its_outputs(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import os

pipeline = pivot.Pipeline("cd")

def wander() -> Annotated[dict, pivot.Out("result.json", pivot.loaders.JSON())]:
    os.makedirs("sub", exist_ok=True)
    os.chdir("sub")
    return {"ok": 1}

pipeline.register(wander)
"""
        },
    )
    pivot("run")
    assert json.loads((project / "result.json").read_text()) == {"ok": 1}
    assert not (project / "sub/result.json").exists()


def test_dep_spelled_through_a_missing_directory(project, pivot) -> None:
    write_files(
        project,
        {
            "shared/data.csv": "a\nb\n",
            "b/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("b")

def rows(data: Annotated[str, pivot.Dep("../x/../shared/./data.csv", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("rows.txt", pivot.loaders.Text())]:
    return str(len(data.split()))

pipeline.register(rows)
""",
        },
    )
    pivot("run", cwd="b")
    assert (project / "b/rows.txt").read_text() == "2"


def test_the_pickle_loader_writes_with_the_highest_protocol_by_default() -> None:
    # Written out in the loader (so `pickle` is imported only when used); a Python with a
    # newer protocol shows up here first.
    assert Pickle().protocol == pickle.HIGHEST_PROTOCOL
