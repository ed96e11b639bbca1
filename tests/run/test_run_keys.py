"""Run keys are the same in every process: a second `pivot run` is a no-op, and a change is
seen. Params and loaders go through `canonical_json`, config objects through fingerprints."""

from __future__ import annotations

import os
import subprocess
import sys

from support import COUNTER, executions, write_files

HEADER = (
    """
import dataclasses
import pathlib
from typing import Annotated, Callable

import pivot
"""
    + COUNTER
)

COLUMNS = ("age", "income", "city", "zip", "score", "name")


def seeds_with_different_set_order() -> tuple[str, str]:
    """Two PYTHONHASHSEED values under which a frozenset of COLUMNS iterates differently."""
    probe = f"print(list(frozenset({COLUMNS!r})))"
    orders: dict[str, str] = {}
    for seed in range(1, 20):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        ).stdout
        for other, order in orders.items():
            if order != out:
                return other, str(seed)
        orders[str(seed)] = out
    raise AssertionError("set order did not change with PYTHONHASHSEED")


def test_frozenset_param_gives_one_run_key_across_processes(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + f"""
@dataclasses.dataclass
class Params:
    columns: frozenset = frozenset({COLUMNS!r})
    by_kind: dict = dataclasses.field(
        default_factory=lambda: {{"num": {{"age", "income", "score"}}, "cat": ("city",)}}
    )

pipeline = pivot.Pipeline("keys")

def select(params: Params) -> Annotated[list, pivot.Out("cols.json", pivot.loaders.JSON())]:
    _count("select")
    return sorted(params.columns)

pipeline.register(select)
"""
        },
    )
    first, second = seeds_with_different_set_order()
    pivot("run", PYTHONHASHSEED=first)
    assert executions(project) == ["select"]
    again = pivot("run", PYTHONHASHSEED=second)
    assert "Every stage is up to date" in again.stdout, again.stdout
    status = pivot("status", PYTHONHASHSEED=second)
    assert "Every stage is up to date" in status.stdout, status.stdout
    assert executions(project) == ["select"]


def test_int_and_str_keys_in_params(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("mixed")

def stage(params: dict) -> Annotated[str, pivot.Out("x.txt", pivot.loaders.Text())]:
    _count("stage")
    return str(sorted(params["weights"].items(), key=str))

pipeline.register(stage, params={"weights": {1: 0.5, "b": 0.25}})
"""
        },
    )
    pivot("run")
    assert "Every stage is up to date" in pivot("run").stdout
    assert executions(project) == ["stage"]


LOADER = (
    HEADER
    + """
def strip_lines(text):
    return "\\n".join(line.strip() for line in text.splitlines())


@dataclasses.dataclass(frozen=True)
class Cleaned(pivot.loaders.Loader):
    clean: Callable = strip_lines
    options: frozenset = frozenset({"a", "b", "c", "d"})

    def load(self, path):
        return self.clean(path.read_text())

    def save(self, value, path):
        path.write_text(self.clean(value) + "\\n")


pipeline = pivot.Pipeline("loader")

def copy(
    text: Annotated[str, pivot.Dep("raw.txt", Cleaned())],
) -> Annotated[str, pivot.Out("clean.txt", Cleaned())]:
    _count("copy")
    return text

pipeline.register(copy)
"""
)


def test_loader_with_a_function_field_is_stable_across_runs(project, pivot) -> None:
    write_files(project, {"pipeline.py": LOADER, "raw.txt": "  a  \n b\n"})
    first, second = seeds_with_different_set_order()
    pivot("run", PYTHONHASHSEED=first)
    assert (project / "clean.txt").read_text() == "a\nb\n"
    again = pivot("run", PYTHONHASHSEED=second)
    assert "Every stage is up to date" in again.stdout, again.stdout
    assert executions(project) == ["copy"]


NESTED = (
    HEADER
    + """
LIMIT = 10


@dataclasses.dataclass
class Inner:
    zeta: int = 1
    alpha: tuple = (1, 2)
    mapping: dict = dataclasses.field(default_factory=lambda: {"z": 1, "a": [1, 2]})


@dataclasses.dataclass
class Params:
    title: str = "t"
    inner: Inner = dataclasses.field(default_factory=Inner)


pipeline = pivot.Pipeline("nested")

def report(params: Params) -> Annotated[dict, pivot.Out("report.json", pivot.loaders.JSON())]:
    _count("report")
    return {"zeta": params.inner.zeta, "limit": LIMIT}

pipeline.register(report)
"""
)


def test_nested_dataclass_params_and_an_unrelated_change(project, pivot) -> None:
    write_files(project, {"pipeline.py": NESTED})
    pivot("run")
    assert "Every stage is up to date" in pivot("run").stdout
    source = (project / "pipeline.py").read_text()
    (project / "pipeline.py").write_text(source.replace("LIMIT = 10", "LIMIT = 11"))
    status = pivot("status").stdout
    assert "code changed: const:LIMIT" in status
    assert "param changed" not in status, status
    (project / "pipeline.py").write_text(source.replace("zeta: int = 1", "zeta: int = 2"))
    status = pivot("status").stdout
    assert "param changed: inner.zeta 1 → 2" in status and "param changed: title" not in status, (
        status
    )


CONFIG = (
    HEADER
    + """
class Cfg:
    def __init__(self, scale):
        self.scale = scale


CFG = Cfg(scale=2)


def make(cfg):
    def stage() -> Annotated[str, pivot.Out("scale.txt", pivot.loaders.Text())]:
        _count("stage")
        return f"{CFG.scale} {cfg.scale}"
    return stage


pipeline = pivot.Pipeline("config")
pipeline.register(make(Cfg(scale=5)), name="stage")
"""
)


def test_edits_of_plain_config_objects_rerun_the_stage(project, pivot) -> None:
    write_files(project, {"pipeline.py": CONFIG})
    pivot("run")
    assert (project / "scale.txt").read_text() == "2 5"
    assert "Every stage is up to date" in pivot("run").stdout
    source = (project / "pipeline.py").read_text()
    (project / "pipeline.py").write_text(source.replace("Cfg(scale=2)", "Cfg(scale=3)"))
    assert "code changed: const:CFG" in pivot("status").stdout
    pivot("run")
    assert (project / "scale.txt").read_text() == "3 5"
    (project / "pipeline.py").write_text(source.replace("Cfg(scale=5)", "Cfg(scale=6)"))
    assert "code changed: closure:make.<locals>.stage.cfg" in pivot("status").stdout
    pivot("run")
    assert (project / "scale.txt").read_text() == "2 6"
    assert executions(project) == ["stage", "stage", "stage"]


def test_params_without_a_stable_form_are_a_clear_error(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": HEADER
            + """
import threading

pipeline = pivot.Pipeline("bad")

def stage(params: dict) -> Annotated[str, pivot.Out("x.txt", pivot.loaders.Text())]:
    return "x"

pipeline.register(stage, params={"lock": threading.Lock()})
"""
        },
    )
    proc = pivot("run", rc=1)
    assert "_thread.lock" in proc.stderr and "['lock']" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / ".pivot" / "stages" / "bad" / "stage.lock").exists()


def test_a_run_key_hashes_the_json_text_lock_files_were_written_with() -> None:
    """The run key's text is `json.dumps(sort_keys=True, separators=(",", ":"))` of its
    body, byte for byte (the encoder is made once per process): lock files written by any
    earlier version stay up to date. Non-ASCII, quotes, control characters and fan-in."""
    import json

    import blake3

    from pivot.run.plan import RUN_KEY_VERSION, run_key_of

    body = {
        "v": RUN_KEY_VERSION,
        "code": "c" * 64,
        "params": '{"dict":[["é \\"q\\"",1.5]]}',
        "dep_loaders": [("données/a.csv", '{"dataclass":"x"}'), ("b\tc\u2028", "{}")],
        "outs": [("out/ü.txt", '{"dataclass":"y","fields":[["n",null]]}')],
        "fan_in": [("xs", "list", "données/a.csv")],
    }
    deps = {"données/a.csv": "a" * 64, "b\tc\u2028": "b" * 64}
    text = json.dumps({**body, "deps": sorted(deps.items())}, sort_keys=True, separators=(",", ":"))
    assert run_key_of(body, deps) == blake3.blake3(text.encode()).hexdigest()
    assert run_key_of(body, {}) != run_key_of(body, deps)
