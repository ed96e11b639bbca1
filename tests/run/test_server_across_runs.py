"""`worker.run_task` in this process, with real stage servers and a real folder remote:
a worker thread keeps its stage server for the next run of the same code bundle, and
starts a new one once a module that server imported changed on disk (here rewritten
with the same size and mtime), so a stage never runs a package's old code left in
memory."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

from pivot.run import worker

PIPELINE = """
import os
from typing import Annotated
import pivot, pivotkept
from pivot import Out, loaders

p = pivot.Pipeline("p")

def which() -> Annotated[str, Out("which.txt", loaders.Text())]:
    print(f"server={os.getppid()} code={pivotkept.CODE}")
    return pivotkept.CODE

p.register(which)
"""


def _write_package(site: pathlib.Path, code: str) -> pathlib.Path:
    """`pivotkept` 1.0 in `site`, its module saying `code`; the module's path."""
    (site / "pivotkept").mkdir(parents=True, exist_ok=True)
    module = site / "pivotkept" / "__init__.py"
    module.write_text(f"CODE = {code!r}\n")
    info = site / "pivotkept-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pivotkept\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("pivotkept\n")
    return module


def _run(task: worker.Task, run_id: str) -> str:
    outcome = worker.run_task(dataclasses.replace(task, run_id=run_id), lambda message: None)
    assert outcome.ok, outcome.error
    return outcome.output.strip()


def test_a_stage_server_serves_the_next_run_until_a_module_it_imported_changes(
    project, tmp_path, worker_dir, monkeypatch, coordinator_task
):
    site = tmp_path / "site"
    module = _write_package(site, "old")
    monkeypatch.syspath_prepend(str(site))
    paths = [str(site), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    task = coordinator_task(project, tmp_path / "remote", PIPELINE, "which", "which.txt")

    first = _run(task, "run-1")
    server = worker._SERVERS.server
    assert first == f"server={server.proc.pid} code=old"
    # A new run of the same code: the same server, nothing on disk changed.
    assert _run(task, "run-2") == first
    assert worker._SERVERS.server is server

    # The package's code changes on the worker, same size, mtime put back (and its
    # bytecode removed, which Python would otherwise trust by size and mtime): the server
    # that imported the old code is replaced, and the stage runs the new code.
    stat = module.stat()
    module.write_text("CODE = 'new'\n")
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert module.stat().st_size == stat.st_size
    shutil.rmtree(module.parent / "__pycache__", ignore_errors=True)
    third = _run(task, "run-3")
    assert worker._SERVERS.server is not server
    assert server.proc.poll() is not None
    assert third == f"server={worker._SERVERS.server.proc.pid} code=new"


def test_a_stage_server_is_replaced_once_a_module_would_be_found_ahead_of_one_it_imported(
    project, tmp_path, worker_dir, monkeypatch, coordinator_task
):
    """A new module earlier on `sys.path` than the one the server imported, or a new
    package beside it (a package comes before a module of the same name): a new process
    would import that one, so the server that holds the old module is not kept."""
    early, site = tmp_path / "early", tmp_path / "site"
    early.mkdir()
    _write_package(site, "installed")
    # The shadowing code below is installed too (a dist-info beside it): its version, not
    # its source, is in the fingerprint, which the task below plans once for all runs.
    info = early / "pivotkept-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pivotkept\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(early))
    paths = [str(early), str(site), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    task = coordinator_task(project, tmp_path / "remote", PIPELINE, "which", "which.txt")

    assert _run(task, "run-1").endswith("code=installed")
    server = worker._SERVERS.server
    assert _run(task, "run-2").endswith("code=installed")
    assert worker._SERVERS.server is server

    (early / "pivotkept.py").write_text("CODE = 'shadowing module'\n")
    assert _run(task, "run-3").endswith("code=shadowing module")
    assert worker._SERVERS.server is not server and server.proc.poll() is not None
    server = worker._SERVERS.server

    (early / "pivotkept").mkdir()
    (early / "pivotkept" / "__init__.py").write_text("CODE = 'shadowing package'\n")
    assert _run(task, "run-4").endswith("code=shadowing package")
    assert worker._SERVERS.server is not server and server.proc.poll() is not None


def test_a_stage_server_is_replaced_once_a_module_would_be_found_in_an_earlier_portion(
    project, tmp_path, worker_dir, monkeypatch, coordinator_task
):
    """A namespace package in two folders of `sys.path`: its module imported from the
    later portion is shadowed by one added to the earlier portion (a folder holding no
    module the server imported, and not itself on `sys.path`)."""
    early, site = tmp_path / "early", tmp_path / "site"
    (early / "pivotns").mkdir(parents=True)
    (site / "pivotns").mkdir(parents=True)
    (site / "pivotns" / "kept.py").write_text("CODE = 'later portion'\n")
    # Installed (a dist-info beside each portion): its version, not its source, is in the
    # fingerprint, which the task below plans once for all three runs.
    for folder in (site, early):
        (folder / "pivotns-1.0.dist-info").mkdir()
        (folder / "pivotns-1.0.dist-info" / "METADATA").write_text("Name: pivotns\nVersion: 1.0\n")
    for folder in (site, early):
        monkeypatch.syspath_prepend(str(folder))
    paths = [str(early), str(site), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    pipeline = PIPELINE.replace(
        "import pivot, pivotkept", "import pivot\nfrom pivotns import kept as pivotkept"
    )
    task = coordinator_task(project, tmp_path / "remote", pipeline, "which", "which.txt")

    assert _run(task, "run-1").endswith("code=later portion")
    server = worker._SERVERS.server
    assert _run(task, "run-2").endswith("code=later portion")
    assert worker._SERVERS.server is server

    (early / "pivotns" / "kept.py").write_text("CODE = 'earlier portion'\n")
    assert _run(task, "run-3").endswith("code=earlier portion")
    assert worker._SERVERS.server is not server and server.proc.poll() is not None
