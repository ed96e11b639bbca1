"""The remote click commands, invoked directly (as the lazy `pivot` group in `pivot/cli/main.py` loads them)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from remote_support import make_project

from pivot.cli import gc, remotes, transfer
from pivot.errors import PivotError
from pivot.project import init_project


def _project(root, files):
    return make_project(root, files)


def invoke(command, *args):
    result = CliRunner().invoke(command, list(args), catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_remote_commands(tmp_path, monkeypatch):
    init_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    assert invoke(remotes.remote, "add", "origin", str(store), "--default").exit_code == 0
    invoke(remotes.remote, "add", "s3r", "s3://bucket/prefix")
    invoke(remotes.remote, "modify", "s3r", "secret_access_key", "topsecret", "--local")
    with pytest.raises(PivotError, match="--local"):
        invoke(remotes.remote, "modify", "s3r", "secret_access_key", "topsecret")
    listed = invoke(remotes.remote, "list")
    assert "* origin" in listed.output and "topsecret" not in listed.output
    rows = json.loads(invoke(remotes.remote, "list", "--json").output)
    assert {r["name"] for r in rows} == {"origin", "s3r"}
    assert "topsecret" not in json.dumps(rows)
    invoke(remotes.remote, "default", "s3r")
    invoke(remotes.remote, "remove", "s3r")
    assert "s3r" not in invoke(remotes.remote, "list").output


def test_push_fetch_pull_gc(tmp_path, monkeypatch):
    src = _project(tmp_path / "src", {"data/a.txt": b"a" * 100, "b.txt": b"bbb"})
    store = tmp_path / "store"
    monkeypatch.chdir(src.root)
    invoke(remotes.remote, "add", "origin", str(store), "--default")
    pushed = json.loads(invoke(transfer.push, "--all", "--json", "-j", "2").output)
    assert pushed["blobs"] == 3 and pushed["runs"] == 1 and pushed["action"] == "push"
    assert "0 blobs" in invoke(transfer.push, "--all").output

    dst = tmp_path / "dst"
    init_project(dst)
    (dst / ".pivot" / "stages").rmdir()
    import shutil

    shutil.copytree(src.stages_dir, dst / ".pivot" / "stages")
    shutil.copy(src.pivot_dir / "config.yaml", dst / ".pivot" / "config.yaml")
    shutil.copy(src.root / "pipeline.py", dst / "pipeline.py")
    monkeypatch.chdir(dst)
    fetched = json.loads(invoke(transfer.fetch, "--all", "--json").output)
    assert fetched["blobs"] == 3 and fetched["missing"] == []
    pulled = invoke(transfer.pull, "--all", "-r", "origin")
    assert pulled.exit_code == 0 and "pulled" in pulled.output
    assert (dst / "data" / "a.txt").read_bytes() == b"a" * 100
    assert (dst / "b.txt").read_bytes() == b"bbb"
    dry = json.loads(invoke(gc.gc, "--dry-run", "--json").output)
    assert dry["objects_removed"] == 0 and dry["dry_run"]
    assert "Removed 0 object(s)" in invoke(gc.gc).output


def test_fetch_reports_missing_blobs(tmp_path, monkeypatch):
    src = _project(tmp_path / "src", {"x.txt": b"x"})
    monkeypatch.chdir(src.root)
    (tmp_path / "empty").mkdir()  # an empty remote (a missing folder is an error)
    invoke(remotes.remote, "add", "origin", str(tmp_path / "empty"), "--default")
    for path in src.cache_dir.joinpath("objects").rglob("*"):
        if path.is_file():
            path.unlink()
    with pytest.raises(PivotError, match="not on remote"):
        invoke(transfer.fetch, "--all")
    with pytest.raises(PivotError, match="could not be checked out"):
        invoke(transfer.pull, "--all")
