"""Stages at real sizes: 64 MiB deps and outputs, and a directory output of thousands of
files, run through the real CLI with forked workers (a multi-MiB file once hung a run)."""

from __future__ import annotations

import hashlib
import os
import pathlib

from support import PivotCLI, write_files

BIG = 64 << 20

PIPELINE = """
import hashlib
import pathlib
from typing import Annotated, TypedDict

import pivot

pipeline = pivot.Pipeline("big")


def transform(
    raw: Annotated[pathlib.Path, pivot.Dep("raw.bin", pivot.loaders.PathOnly())],
) -> Annotated[pathlib.Path, pivot.Out("mid.bin", pivot.loaders.PathOnly())]:
    data = raw.read_bytes()
    pathlib.Path("mid.bin").write_bytes(data[::-1])
    return pathlib.Path("mid.bin")


class Split(TypedDict):
    digest: Annotated[str, pivot.Out("digest.txt", pivot.loaders.Text())]
    parts: Annotated[pathlib.Path, pivot.Out("parts", pivot.loaders.PathOnly())]


def split(
    mid: Annotated[pathlib.Path, pivot.Dep("mid.bin", pivot.loaders.PathOnly())],
) -> Split:
    data = mid.read_bytes()
    parts = pathlib.Path("parts")
    parts.mkdir()
    step = len(data) // PARTS
    for i in range(PARTS):
        sub = parts / f"{i % 40:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"part-{i:05d}.bin").write_bytes(data[i * step : (i + 1) * step])
    return Split(digest=hashlib.sha256(data).hexdigest(), parts=parts)


def copy(
    raw: Annotated[pathlib.Path, pivot.Dep("raw.bin", pivot.loaders.PathOnly())],
) -> Annotated[pathlib.Path, pivot.Out("copy.bin", pivot.loaders.PathOnly())]:
    pathlib.Path("copy.bin").write_bytes(raw.read_bytes())
    return pathlib.Path("copy.bin")


PARTS = 4096
pipeline.register(transform)
pipeline.register(split)
pipeline.register(copy)
"""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_outputs(root: pathlib.Path, raw: bytes) -> None:
    reversed_raw = raw[::-1]
    assert (root / "mid.bin").read_bytes() == reversed_raw
    assert (root / "copy.bin").read_bytes() == raw
    assert (root / "digest.txt").read_text() == _sha(reversed_raw)
    parts = sorted((root / "parts").rglob("*.bin"), key=lambda p: p.name)
    assert len(parts) == 4096
    assert b"".join(p.read_bytes() for p in parts) == reversed_raw


def test_64_mib_deps_and_outputs_run_restore_and_rerun(project: pathlib.Path, pivot: PivotCLI):
    write_files(project, {"pipeline.py": PIPELINE})
    raw = os.urandom(BIG)
    (project / "raw.bin").write_bytes(raw)
    # The main process hashes raw.bin before forking; the stages hash 64 MiB outputs.
    first = pivot("run", "-j", "2")
    assert "3 stages: 3 ran" in first.stdout, first.stdout
    _check_outputs(project, raw)

    assert "Every stage is up to date (3 stages" in pivot("run").stdout

    for name in ("mid.bin", "copy.bin", "digest.txt"):
        (project / name).unlink()
    pivot("checkout")
    _check_outputs(project, raw)

    raw = raw[: BIG // 2] + os.urandom(BIG // 2)
    (project / "raw.bin").write_bytes(raw)
    again = pivot("run", "-j", "2")
    assert "3 stages: 3 ran" in again.stdout, again.stdout
    _check_outputs(project, raw)
    assert "up to date" in pivot("status").stdout
