"""A pull checks a large tree output out while its blobs are still being fetched
(`cache/streamed.py`), against a real SeaweedFS: killed at any point and run again it
gives the same workspace, and a damaged pack is refused with nothing of the output
placed."""

from __future__ import annotations

import os
import pathlib
import random
import time

import pytest
from remote_support import clone, files_of, make_project
from support import PivotCLI, kill_when, start_pivot_group

from pivot.cache.state import StateDB
from pivot.project import Project
from pivot.remote.transfer import STREAM_MIN

# Incompressible, so that the push writes several packs and the pull reads several ranges.
_rng = random.Random(16)
FILES = {f"data/d{i % 3}/f{i}.bin": _rng.randbytes(8192 + i % 7) for i in range(1200)}
FILES["notes.txt"] = b"a file output beside the tree\n"
assert len(FILES) - 1 >= STREAM_MIN  # the tree is checked out while it is fetched


@pytest.fixture
def pushed(tmp_path, seaweedfs) -> tuple[Project, Project]:
    """The source project pushed to a SeaweedFS bucket, and a fresh clone set up to pull."""
    src = make_project(tmp_path / "src", FILES)
    cli = PivotCLI(src.root)
    cli("remote", "add", "--default", "origin", f"s3://{seaweedfs.new_bucket()}/cache")
    for key, value in seaweedfs.options().items():
        secret = ["--local"] if "key" in key else []
        cli("remote", "modify", *secret, "origin", key, value)
    cli("push", "--all")
    dst = clone(src, tmp_path / "dst")
    for config in ("config.yaml", "config.local.yaml"):
        (dst.root / ".pivot" / config).write_bytes((src.root / ".pivot" / config).read_bytes())
    return src, dst


def hidden(root: pathlib.Path) -> list[str]:
    return [p.name for p in root.iterdir() if ".pivot-" in p.name]


def files_in_hidden_tree(root: pathlib.Path) -> int:
    count = 0
    for name in hidden(root):
        for _, _, names in os.walk(root / name):
            count += len(names)
    return count


def rows_under(project: Project, prefix: str) -> list[str]:
    """The paths under `prefix` that the stat cache of `project` holds rows for."""
    if not project.state_path.exists():
        return []
    state = StateDB(project.state_path)
    try:
        rows = state.conn.execute("SELECT path FROM stat_cache_v2").fetchall()
    finally:
        state.close()
    return [r[0] for r in rows if r[0].startswith(prefix)]


def after(seconds: float):
    """Ready `seconds` after this call."""
    began = time.monotonic()
    return lambda: time.monotonic() - began > seconds


def once_written(root: pathlib.Path, files: int):
    return lambda: files_in_hidden_tree(root) >= files


def test_a_pull_killed_at_random_points_then_run_again_gives_the_same_workspace(pushed):
    _, dst = pushed
    rng = random.Random(4)
    killed_mid_tree = 0
    # Killed each time once a random number of the tree's files exist in its hidden
    # folder, then after a random delay (if that pull finished first, it is complete).
    for _ in range(3):
        if kill_when(
            start_pivot_group(dst.root, "pull", "--all"),
            once_written(dst.root, rng.randrange(1, 1199)),
        ):
            killed_mid_tree += bool(hidden(dst.root))
            assert not (dst.root / "data").exists(), "a killed pull placed part of the tree"
            assert rows_under(dst, "data/") == [], "stat rows of files never placed"
    if kill_when(start_pivot_group(dst.root, "pull", "--all"), after(rng.uniform(0.0, 1.5))):
        assert not (dst.root / "data").exists() or files_of(dst.root) == FILES
        if not (dst.root / "data").exists():
            assert rows_under(dst, "data/") == []
    assert killed_mid_tree, "no kill came while the tree was being written"

    proc = PivotCLI(dst.root)("pull", "--all")
    assert proc.returncode == 0
    assert files_of(dst.root) == FILES
    assert hidden(dst.root) == []
    # The stat cache learned every pulled file as written: nothing is hashed again.
    state = StateDB(dst.state_path)
    try:
        for rel in FILES:
            st = os.stat(dst.root / rel)
            assert state.lookup(rel, st) is not None, rel
    finally:
        state.close()
    assert "up to date" in PivotCLI(dst.root)("status").stdout


def test_a_damaged_pack_is_refused_and_nothing_of_the_tree_is_placed(pushed, seaweedfs):
    src, dst = pushed
    client = seaweedfs.client()
    config = (src.root / ".pivot" / "config.yaml").read_text()
    bucket = config.split("s3://", 1)[1].split("/", 1)[0]
    keys = client.list_objects_v2(Bucket=bucket, Prefix="cache/packs/")["Contents"]
    assert len(keys) >= 2, "the tree should span several packs"
    victim = max(keys, key=lambda k: k["Size"])["Key"]
    data = bytearray(client.get_object(Bucket=bucket, Key=victim)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=victim, Body=bytes(data))

    proc = PivotCLI(dst.root)("pull", "--all", rc=1)
    assert proc.returncode == 1
    assert "damaged" in proc.stderr and victim.rsplit("/", 1)[1] in proc.stderr
    assert not (dst.root / "data").exists()
    assert hidden(dst.root) == []
