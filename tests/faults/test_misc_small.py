"""Smaller faults: messages that name what they are about, and files a stage writes unseen."""

from __future__ import annotations

import shutil

from support import write_files

JSON_SET = """
from typing import Annotated, TypedDict

import pivot

pipeline = pivot.Pipeline("p")


class Result(TypedDict):
    good: Annotated[dict, pivot.Out("good.json", pivot.loaders.JSON())]
    bad: Annotated[dict, pivot.Out("bad.json", pivot.loaders.JSON())]


def make() -> Result:
    return {"good": {"a": 1}, "bad": {"tags": {"x", "y"}}}


pipeline.register(make)
"""

UNDECLARED = """
import pathlib
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def first() -> Annotated[str, pivot.Out("data/first.txt", pivot.loaders.Text())]:
    pathlib.Path("stray.txt").write_text("not declared")
    pathlib.Path("data/extra.txt").write_text("not declared")
    return "first"


def second() -> Annotated[str, pivot.Out("second.txt", pivot.loaders.Text())]:
    pathlib.Path("deep").mkdir(exist_ok=True)
    return "second"


pipeline.register(first)
pipeline.register(second)
"""


def test_an_unserialisable_json_output_names_the_stage_and_output(project, pivot) -> None:
    write_files(project, {"pipeline.py": JSON_SET})
    proc = pivot("run", rc=1)
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr, proc.stderr
    for needle in ("p/make", "bad.json", "JSON", "set is not JSON serializable"):
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not (project / "good.json").exists() and not (project / "bad.json").exists()


def test_undeclared_files_a_stage_creates_are_named_once(project, pivot) -> None:
    write_files(project, {"pipeline.py": UNDECLARED})
    proc = pivot("run", "-j", "2")
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("Warning:")]
    named = " ".join(warnings)
    for path in ("stray.txt", "data/extra.txt", "deep"):
        assert named.count(path) == 1, proc.stderr  # each once, by whichever stage saw it
    assert "first.txt" not in named and "second.txt" not in named
    assert "pivot.Out" in named and "no stage declares" in named
    # The files are there now: a run that creates nothing new says nothing.
    assert pivot("run", "--force", "-j", "1").stderr == ""


def test_declared_outputs_of_parallel_stages_raise_no_warning(project, pivot) -> None:
    stages = "\n".join(
        f"def s{i}() -> Annotated[str, pivot.Out('out/{i}.txt', pivot.loaders.Text())]:\n"
        f"    return '{i}'\n\n\npipeline.register(s{i})\n"
        for i in range(6)
    )
    header = "from typing import Annotated\n\nimport pivot\n\npipeline = pivot.Pipeline('p')\n\n"
    write_files(project, {"pipeline.py": header + stages})
    assert pivot("run", "-j", "3").stderr == ""


def test_the_fallback_warning_names_the_default_remote(project, pivot, tmp_path) -> None:
    store = tmp_path / "store"
    write_files(project, {"pipeline.py": JSON_SET.replace('{"x", "y"}', '["x", "y"]')})
    pivot("remote", "add", "origin", str(store))
    pivot("run")
    pivot("push")
    for index in (store / "index").iterdir():
        index.write_bytes(b"damaged")
    # A fresh clone's view: no cache, no lock files, no cached remote indexes.
    for name in ("cache", "stages", "state.db"):
        shutil.rmtree(project / ".pivot" / name, ignore_errors=True)
        (project / ".pivot" / name).unlink(missing_ok=True)
    proc = pivot("run")
    assert f"Warning: The remote 'origin' ({store}) is unavailable" in proc.stderr, proc.stderr
    assert "ran" in proc.stdout
    proc = pivot("run", "--force", "--no-fallback", rc=1)
    assert f"Cannot restore from the remote 'origin' ({store}):" in proc.stderr, proc.stderr
