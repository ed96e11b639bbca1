"""A lock file that records outputs its stage does not declare is stale, and its extra
outputs are never placed, fetched or pushed.

The attack: a pull request touching only a machine-written lock file keeps the run key
and adds outputs (`helpers.py`, `.gitignore`) whose blobs it pushed. Were the lock
trusted, `checkout` or `pull` would replace code on the reviewer's checkout while
`status` said up to date.
"""

from __future__ import annotations

import json
import shutil

import pytest
from paths_support import cache_file
from support import write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

def make() -> Annotated[str, pivot.Out("o.txt", pivot.loaders.Text())]:
    return "honest\\n"

pipeline.register(make)
"""
HELPERS = b"import os\nos.system('echo pwned')\n"


@pytest.fixture
def tampered(project, pivot, tmp_path):
    """A pipeline that ran, then its lock edited to add two outputs (run key kept)."""
    write_files(project, {"pipeline.py": PIPELINE, "helpers.py": "SAFE = True\n"})
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("run")
    lock_file = project / ".pivot" / "stages" / "p" / "make.lock"
    lock = json.loads(lock_file.read_text())
    lock["outs"]["helpers.py"] = cache_file(project, HELPERS)
    lock["outs"][".gitignore"] = cache_file(project, b"*\n")
    lock_file.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return lock_file


def assert_untouched(project) -> None:
    assert (project / "helpers.py").read_text() == "SAFE = True\n"
    ignore = project / ".gitignore"  # Pivot's own block may list o.txt; never the crafted `*`
    assert not ignore.exists() or "*" not in ignore.read_text().splitlines()


def test_status_and_verify_call_the_stage_stale(project, pivot, tampered):
    pivot("push", "--all", rc=None)
    status = pivot("status", "--json")
    (row,) = json.loads(status.stdout)
    assert row["action"] != "skip"
    assert "its declared outputs differ from its lock file's" in row["reasons"]
    verify = pivot("verify", rc=1)
    assert "p/make is not up to date" in verify.stdout + verify.stderr


@pytest.mark.parametrize("scope", [[], ["--all"], ["p/make"]])
def test_checkout_places_no_output_the_stage_does_not_declare(project, pivot, tampered, scope):
    (project / "helpers.py").write_text("SAFE = True\n")
    (project / "o.txt").unlink()
    proc = pivot("checkout", *scope)
    assert str(tampered) in proc.stderr and "helpers.py" in proc.stderr
    assert proc.stderr.count(str(tampered)) == 1  # one warning
    assert_untouched(project)
    assert not (project / "o.txt").exists()  # the stale lock is not used at all


@pytest.mark.parametrize("scope", [[], ["--all"]])
def test_pull_and_fetch_skip_a_lock_with_extra_outputs(project, pivot, tampered, scope):
    """The attacker pushed the blobs from a pipeline that did declare them."""
    declared = PIPELINE.replace(
        '"o.txt", pivot.loaders.Text()', '"helpers.py", pivot.loaders.Text()'
    )
    assert declared != PIPELINE
    lock = json.loads(tampered.read_text())
    honest = dict(lock["outs"])
    pushed = {"helpers.py": honest.pop("helpers.py")}
    tampered.write_text(json.dumps({**lock, "outs": pushed}))
    write_files(project, {"pipeline.py": declared})
    pivot("push", "--all")
    write_files(project, {"pipeline.py": PIPELINE})
    tampered.write_text(json.dumps({**lock, "outs": {**honest, **pushed}}))

    shutil.rmtree(project / ".pivot" / "cache")
    (project / "helpers.py").write_text("SAFE = True\n")
    fetched = pivot("fetch", *scope)
    assert str(tampered) in fetched.stderr
    assert not list((project / ".pivot" / "cache").rglob("objects/*/*"))
    pulled = pivot("pull", *scope)
    assert str(tampered) in pulled.stderr and "helpers.py" in pulled.stderr
    assert_untouched(project)


def test_run_reruns_the_stage_and_rewrites_the_lock(project, pivot, tampered):
    proc = pivot("run")
    assert "make" in proc.stdout
    assert_untouched(project)
    assert sorted(json.loads(tampered.read_text())["outs"]) == ["o.txt"]
    assert (project / "o.txt").read_text() == "honest\n"
    assert "up to date" in pivot("status").stdout


def test_push_all_skips_a_lock_of_no_stage_but_sends_every_run_record(project, pivot, tampered):
    orphan = tampered.with_name("gone.lock")
    orphan.write_text(tampered.read_text().replace('"p/make"', '"p/gone"'))
    proc = pivot("push", "--all", "--json")
    assert str(orphan) in proc.stderr and "belongs to no stage" in proc.stderr
    assert str(tampered) in proc.stderr
    assert json.loads(proc.stdout)["runs"] == 1  # the honest run's record
