"""Damaged local cache objects (loose and in local packs) are detected, set aside and never
placed in the workspace, trusted by `run`, or pushed as good."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest
from remote_support import make_project
from support import COUNTER, PivotCLI, executions, write_files

PIPELINE = (
    """
import pathlib
import shutil
from typing import Annotated

import pivot
"""
    + COUNTER
    + """

pipeline = pivot.Pipeline("p")


def make(
    raw: Annotated[bytes, pivot.Dep("raw.bin", pivot.loaders.Bytes())],
) -> Annotated[bytes, pivot.Out("data.bin", pivot.loaders.Bytes())]:
    _count("make")
    return raw * 3


def down(
    data: Annotated[bytes, pivot.Dep("data.bin", pivot.loaders.Bytes())],
) -> Annotated[bytes, pivot.Out("down.bin", pivot.loaders.Bytes())]:
    _count("down")
    return data[::-1]


pipeline.register(make)
pipeline.register(down)
"""
)


def out_hash(project: pathlib.Path, stage: str, path: str) -> str:
    lock = json.loads((project / ".pivot" / "stages" / "p" / f"{stage}.lock").read_text())
    return lock["outs"][path]["hash"]


def flip_byte(path: pathlib.Path, at: int = 10) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def loose(project: pathlib.Path, digest: str) -> pathlib.Path:
    return project / ".pivot" / "cache" / "objects" / digest[:2] / digest[2:]


def packed_at(packs: pathlib.Path, digest: str) -> tuple[pathlib.Path, int, int]:
    """The local pack holding `digest`, and the blob's offset and length in it."""
    import msgpack

    for index in packs.glob("*.idx"):
        for blob, offset, length, _size, _codec in msgpack.unpackb(index.read_bytes())["blobs"]:
            if blob.hex() == digest:
                return index.with_suffix(".pack"), offset, length
    raise AssertionError(f"{digest} is in no local pack")


@pytest.fixture
def built(project, pivot):
    raw = os.urandom(3000)
    write_files(project, {"pipeline.py": PIPELINE})
    (project / "raw.bin").write_bytes(raw)
    pivot("run")
    return raw * 3


@pytest.mark.parametrize("link", ["copy", "hardlink", "symlink"])
def test_checkout_refuses_a_damaged_object_and_sets_it_aside(project, pivot, built, link):
    digest = out_hash(project, "make", "data.bin")
    flip_byte(loose(project, digest))
    (project / "data.bin").unlink()

    proc = pivot("checkout", "--link", link, rc=1)
    assert "Traceback" not in proc.stderr
    assert digest in proc.stderr and "data.bin" in proc.stderr
    assert "does not match its hash" in proc.stderr and "pivot run" in proc.stderr
    assert not (project / "data.bin").exists()
    assert not loose(project, digest).exists()
    assert (project / ".pivot" / "cache" / "quarantine" / digest).is_file()
    assert [p.name for p in project.iterdir() if "pivot-tmp" in p.name] == []

    # `run` no longer trusts it: the stage runs again and rebuilds the right bytes; the
    # downstream stage sees the same content and stays recorded.
    before = executions(project)
    run = pivot("run")
    assert executions(project)[len(before) :] == ["make"], run.stdout
    assert (project / "data.bin").read_bytes() == built
    assert "up to date" in pivot("status").stdout
    assert loose(project, digest).is_file()


def test_run_restore_does_not_place_a_damaged_object(project, pivot, built):
    digest = out_hash(project, "make", "data.bin")
    flip_byte(loose(project, digest))
    (project / "data.bin").unlink()
    before = executions(project)
    proc = pivot("run")
    assert "does not match its hash" in proc.stderr and digest in proc.stderr
    assert executions(project)[len(before) :] == ["make"]
    assert (project / "data.bin").read_bytes() == built
    # verify (CI gate) and status agree with what is on disk
    assert "up to date" in pivot("status").stdout


def test_damaged_object_is_fetched_again_from_the_remote(project, pivot, built, tmp_path):
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("push")
    digest = out_hash(project, "make", "data.bin")
    flip_byte(loose(project, digest))
    (project / "data.bin").unlink()

    before = executions(project)
    pivot("run")
    assert executions(project)[len(before) :] == []  # restored from the remote, not rerun
    assert (project / "data.bin").read_bytes() == built
    assert (project / ".pivot" / "cache" / "quarantine" / digest).is_file()

    down = out_hash(project, "down", "down.bin")
    flip_byte(loose(project, down))
    (project / "down.bin").unlink()
    pivot("checkout")
    assert (project / "down.bin").read_bytes() == built[::-1]


def test_damaged_blob_in_a_local_pack(project, pivot, built, tmp_path):
    """Pulled small blobs live in local packs: a flipped byte there is caught too."""
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("push")
    digest = out_hash(project, "make", "data.bin")
    cache = project / ".pivot" / "cache"
    for path in (cache / "objects").rglob("*"):
        if path.is_file():
            path.unlink()
    (project / "data.bin").unlink()
    pivot("pull")
    (project / "data.bin").unlink()
    assert not loose(project, digest).exists()
    pack, offset, length = packed_at(cache / "packs", digest)
    flip_byte(pack, offset + length // 2)

    # Without the remote: a clear error naming the blob and its pack; nothing placed.
    pivot("remote", "remove", "origin")
    proc = pivot("checkout", rc=1)
    assert "Traceback" not in proc.stderr
    assert digest in proc.stderr and pack.name in proc.stderr and "data.bin" in proc.stderr
    assert not (project / "data.bin").exists()
    index = pack.with_suffix(".idx")
    assert not index.exists() or bytes.fromhex(digest) not in index.read_bytes()

    # With the remote back, pull fetches it again.
    pivot("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    pivot("pull")
    assert (project / "data.bin").read_bytes() == built


def test_push_with_one_damaged_object_stores_and_indexes_the_rest(project, pivot, built, tmp_path):
    remote = tmp_path / "remote"
    pivot("remote", "add", "--default", "origin", str(remote))
    damaged = out_hash(project, "make", "data.bin")
    flip_byte(loose(project, damaged))

    proc = pivot("push", rc=1)
    assert "Traceback" not in proc.stderr
    assert damaged in proc.stderr and "not pushed" in proc.stderr
    assert list((remote / "index").iterdir()), "the good blobs must be indexed"

    # A clone gets the intact output; the damaged one is reported missing, never placed.
    clone = tmp_path / "clone"
    clone.mkdir()
    pivot("init", cwd=clone)
    for committed in ("pipeline.py", "raw.bin"):
        shutil.copy(project / committed, clone / committed)
    for lock in (project / ".pivot" / "stages").rglob("*.lock"):
        dest = clone / ".pivot" / "stages" / lock.relative_to(project / ".pivot" / "stages")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(lock.read_bytes())
    pivot("remote", "add", "--default", "origin", str(remote), cwd=clone)
    pulled = pivot("pull", "--all", cwd=clone, rc=1)
    assert "data.bin" in pulled.stderr
    assert (clone / "down.bin").read_bytes() == built[::-1]
    assert not (clone / "data.bin").exists()


def test_push_of_a_damaged_64mib_object_stores_nothing_of_it(tmp_path):
    """A large blob is streamed in parts; its damage shows only after the last part."""
    src = make_project(tmp_path / "src", {"big.bin": os.urandom(64 << 20), "small.txt": b"s"})
    lock = json.loads(next(src.stages_dir.rglob("*.lock")).read_text())
    digest = lock["outs"]["big.bin"]["hash"]
    flip_byte(loose(src.root, digest), at=(64 << 20) - 10)
    remote = tmp_path / "remote"
    cli = PivotCLI(src.root)
    cli("remote", "add", "--default", "origin", str(remote))

    proc = cli("push", "--all", rc=1)
    assert digest in proc.stderr and "Traceback" not in proc.stderr
    stored = [p for p in (remote / "packs").rglob("*") if p.is_file()]
    assert stored and all(p.stat().st_size < (1 << 20) for p in stored)
    assert list((remote / "index").iterdir()), "small.txt is stored and indexed"
    assert (src.cache_dir / "quarantine" / digest).is_file()
