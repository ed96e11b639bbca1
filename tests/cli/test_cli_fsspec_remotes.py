"""An FTP remote driven through the CLI as a new user would: options set one by one, the
password only in config.local.yaml or the environment, push and pull, and each bad input
(unknown option, secret or password URL in the committed config, login refused, no write
permission) one paragraph naming the remote, no secret printed, nothing half-written."""

from __future__ import annotations

import shutil
import uuid

import pytest
from fsspec_servers import PASSWORD, READER
from support import write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return "hello over ftp\\n" * 1000


pipeline.register(make)
"""


@pytest.fixture
def box(project, pivot, ftp_server):
    """The project, run once, with the FTP remote 'box' (user set, no password yet);
    returns the remote's folder on the server."""
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    root = uuid.uuid4().hex[:10]
    pivot("remote", "add", "--default", "box", ftp_server.url(root))
    pivot("remote", "modify", "box", "username", "pivot")
    return ftp_server.home / root


def files_under(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_one_paragraph(proc, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and PASSWORD not in out
    assert "'box'" in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def test_push_and_pull_with_the_password_in_the_local_file(project, pivot, box):
    pivot("remote", "modify", "--local", "box", "password", PASSWORD)
    assert PASSWORD not in (project / ".pivot/config.yaml").read_text()
    listed = pivot("remote", "list").stdout
    assert "password=***" in listed and "username=pivot" in listed and PASSWORD not in listed
    pivot("push")
    stored = files_under(box)
    assert stored and not [n for n in stored if n.endswith(".tmp")]
    (project / "out.txt").unlink()
    shutil.rmtree(project / ".pivot/cache")
    pivot("pull")
    assert (project / "out.txt").read_text() == "hello over ftp\n" * 1000


def test_password_from_the_environment(project, pivot, box):
    pivot("push", PIVOT_REMOTE_BOX_PASSWORD=PASSWORD)
    assert files_under(box)


def test_unknown_option_lists_the_known_ones(project, pivot, box):
    proc = pivot("remote", "modify", "box", "usrname", "pivot", rc=1)
    assert_one_paragraph(proc, "'usrname'", "username", "password", "timeout")
    assert "usrname" not in (project / ".pivot/config.yaml").read_text()


def test_secret_option_is_refused_in_the_committed_config(project, pivot, box):
    proc = pivot("remote", "modify", "box", "password", PASSWORD, rc=1)
    assert_one_paragraph(proc, "--local", "PIVOT_REMOTE_BOX_PASSWORD")
    assert PASSWORD not in (project / ".pivot/config.yaml").read_text()


def test_password_url_in_the_committed_config_is_refused(project, pivot, box, ftp_server):
    config = project / ".pivot/config.yaml"
    url = ftp_server.url("x").replace("ftp://", f"ftp://pivot:{PASSWORD}@")
    config.write_text(f"default_remote: box\nremotes:\n  box:\n    url: {url}\n")
    assert_one_paragraph(pivot("push", rc=1), "holds a secret", "config.local.yaml")


def test_refused_login(project, pivot, box):
    pivot("remote", "modify", "--local", "box", "password", "p")
    proc = pivot("push", rc=1)
    assert_one_paragraph(proc, "refused the login", "PIVOT_REMOTE_BOX_PASSWORD")
    # words intact, not `***acks` (the first request reads the remote's identity object)
    assert any(word in proc.stderr for word in ("packs", "index", "pivot-remote-id"))
    assert files_under(box) == []


def test_no_write_permission(project, pivot, box, ftp_server):
    pivot("remote", "modify", "box", "username", READER)
    pivot("remote", "modify", "--local", "box", "password", PASSWORD)
    assert_one_paragraph(pivot("push", rc=1), "permission denied", "write access")
    assert files_under(box) == []
