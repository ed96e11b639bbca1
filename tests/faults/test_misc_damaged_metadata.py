"""Damaged local metadata: the state db is rebuilt, a broken lock or config file is named."""

from __future__ import annotations

import os
import sqlite3

import pytest
from support import write_files

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return "made"


pipeline.register(make)
"""


def assert_clean_error(proc, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def damage_pages(db) -> None:
    """Keep the sqlite header, overwrite every page after the first."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    data[4096 + 100 :] = b"\xa5" * (len(data) - 4096 - 100)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["garbage", "pages"])
def test_a_damaged_state_db_is_rebuilt_once(project, pivot, damage) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    db = project / ".pivot/state.db"
    if damage == "garbage":
        db.write_bytes(os.urandom(8192))
        for extra in project.glob(".pivot/state.db-*"):
            extra.unlink()
    else:
        damage_pages(db)
    proc = pivot("status")
    assert "up to date" in proc.stdout
    assert proc.stderr.count("Warning:") == 1, proc.stderr
    assert str(db) in proc.stderr and "rebuilt" in proc.stderr
    again = pivot("run")
    assert again.stderr == "" and "up to date" in again.stdout
    assert (project / "out.txt").read_text() == "made"


def test_a_lock_file_that_is_not_utf8_is_named(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    lock = project / ".pivot/stages/p/make.lock"
    good = lock.read_bytes()
    lock.write_bytes(b"\xff\xfe" + good)
    status = pivot("status")
    assert str(lock) in status.stderr and "UTF-8" in status.stderr
    assert_clean_error(pivot("checkout", rc=1), str(lock), "UTF-8")
    pivot("run")  # restores from the run record and rewrites the lock
    assert lock.read_bytes() == good


@pytest.mark.parametrize(
    ("name", "text", "needles"),
    [
        ("config.yaml", b"\xff\xfe\x00r", ["not UTF-8"]),
        ("config.local.yaml", b"remotes:\n  o:\n    jobs: lots\n", ["`remotes.o.jobs`", "'lots'"]),
        ("config.yaml", b"remotes:\n  o:\n    url: ../store\n    jobs: 0\n", ["`remotes.o.jobs`"]),
        ("config.local.yaml", b"remotes:\n  o: [../store]\n", ["`remotes.o`", "a list"]),
        ("config.yaml", b"remotes: [o]\n", ["`remotes`", "a list"]),
        (
            "config.local.yaml",
            b"remotes:\n  o:\n    url: {a: 1}\n",
            ["`remotes.o.url`", "a mapping"],
        ),
        (
            "config.yaml",
            b"remotes:\n  o:\n    url: ../s\n    region: [a]\n",
            ["`remotes.o.region`"],
        ),
        ("config.local.yaml", b"default_remote: {o: 1}\n", ["`default_remote`"]),
        ("config.yaml", b"- remotes\n", ["top level", "a list"]),
        ("config.local.yaml", b"remotes:\n  o:\n    url: [\n", ["not valid YAML"]),
    ],
)
def test_a_bad_config_file_is_named(project, pivot, name, text, needles) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    path = project / ".pivot" / name
    path.write_bytes(text)
    for command in (["remote", "list"], ["run"]):
        assert_clean_error(pivot(*command, rc=1), str(path), *needles)


def test_a_secret_of_the_wrong_type_is_not_printed(project, pivot) -> None:
    path = project / ".pivot/config.local.yaml"
    path.write_bytes(b"remotes:\n  o:\n    url: ../s\n    secret_access_key: 123456789\n")
    pivot("remote", "list")  # a number is a string to the config
    path.write_bytes(b"remotes:\n  o:\n    url: ../s\n    secret_access_key: [hunter22]\n")
    proc = pivot("remote", "list", rc=1)
    assert_clean_error(proc, "`remotes.o.secret_access_key`")
    assert "hunter22" not in proc.stderr
