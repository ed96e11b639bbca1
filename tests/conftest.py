"""Shared fixtures: real projects in temp dirs, driven through the real CLI."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


class PivotCLI:
    """Runs `python -m pivot` as a user would, in a given directory."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def __call__(
        self, *args: str, cwd: pathlib.Path | str | None = None, rc: int | None = 0, **env: str
    ) -> subprocess.CompletedProcess:
        where = self.root / cwd if cwd is not None else self.root
        proc = subprocess.run(
            [sys.executable, "-m", "pivot", *args],
            cwd=where,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
            timeout=120,
        )
        if rc is not None and proc.returncode != rc:
            raise AssertionError(
                f"pivot {' '.join(args)} exited {proc.returncode}, expected {rc}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc


def write_files(root: pathlib.Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def executions(root: pathlib.Path) -> list[str]:
    """Stage names in the order the test stages recorded running (see COUNTER)."""
    log = root / "executions.log"
    return log.read_text().split() if log.exists() else []


COUNTER = """
def _count(name):
    import pathlib
    root = pathlib.Path(__file__).resolve().parent
    while not (root / ".pivot").is_dir():
        root = root.parent
    with open(root / "executions.log", "a") as log:
        log.write(name + "\\n")
"""


@pytest.fixture
def project(tmp_path: pathlib.Path) -> pathlib.Path:
    """An initialised, empty Pivot project."""
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pivot", "init"],
        cwd=root,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    return root


@pytest.fixture
def pivot(project: pathlib.Path) -> PivotCLI:
    return PivotCLI(project)
