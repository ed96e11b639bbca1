"""A full disk (a real 20 MiB tmpfs as the project folder): one clear paragraph naming the
file being written, exit 1, and nothing half-written left behind."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest
from remote_support import clone, files_of, make_project
from support import PivotCLI, write_files

from pivot._racy import MARKER
from pivot._swept import MEMO
from pivot.run import lock_memo

SIZE = "20m"


@pytest.fixture
def small_disk(tmp_path):
    """A folder on its own 20 MiB tmpfs (needs root, as in CI containers)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def source(tmp_path):
    """A pushed project whose outputs (12 + 25 MiB, and small files) overflow the disk."""
    files = {
        "big.bin": os.urandom(12 << 20),
        "huge.bin": os.urandom(25 << 20),
        "small/a.txt": b"a" * 1000,
    }
    src = make_project(tmp_path / "src", files)
    PivotCLI(src.root)("remote", "add", "--default", "origin", str(tmp_path / "remote"))
    PivotCLI(src.root)("push", "--all")
    return src


def assert_disk_full(proc, root: pathlib.Path) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr
    assert "No space left on device while writing " + str(root) in proc.stderr, proc.stderr
    assert "Cannot read" not in proc.stderr  # the remote is not blamed
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "; nothing half-written was kept." in proc.stderr
    # A pull may have placed some outputs in full first; it lists them before the advice.
    assert proc.stderr.endswith(f" {FREE_SPACE}\n")


FREE_SPACE = (
    "Free some space (`pivot gc` removes cache objects no lock file needs) and run the "
    "command again."
)


# What the tmp folder holds by design, whole or not at all: the fingerprint index, the
# racy marker and the memos of the stale-temp sweep and of the lock files.
KEPT = {"fingerprint", MARKER, MEMO, lock_memo.NAME}


def assert_nothing_half_written(root: pathlib.Path) -> None:
    assert sorted(p.name for p in (root / ".pivot" / "tmp").iterdir() if p.name not in KEPT) == [
        "command.lock"
    ]
    assert (root / ".pivot" / "tmp" / "command.lock").read_text() == ""
    assert [p for p in root.rglob("*pivot-tmp*")] == []


@pytest.mark.parametrize("command", ["pull", "fetch"])
def test_transfer_on_a_full_disk(small_disk, source, command):
    dst = clone(source, small_disk / "clone")
    cli = PivotCLI(dst.root)
    cli("remote", "add", "--default", "origin", str(source.root.parent / "remote"))
    proc = cli(command, "--all", rc=None)
    assert_disk_full(proc, dst.root)
    assert_nothing_half_written(dst.root)
    expected = files_of(source.root)
    for rel, data in files_of(dst.root).items():  # what was checked out is complete
        assert data == expected[rel], rel


def test_run_on_a_full_disk(small_disk):
    root = small_disk / "proj"
    root.mkdir()
    cli = PivotCLI(root)
    cli("init")
    write_files(
        root,
        {
            "seed.txt": "1\n",
            "pipeline.py": """
                import os
                import pathlib
                from typing import Annotated

                import pivot

                pipeline = pivot.Pipeline("p")


                def make(
                    seed: Annotated[str, pivot.Dep("seed.txt", pivot.loaders.Text())],
                ) -> Annotated[pathlib.Path, pivot.Out("big.bin", pivot.loaders.PathOnly())]:
                    out = pathlib.Path("big.bin")
                    out.write_bytes(os.urandom(12 << 20))
                    return out


                pipeline.register(make)
            """,
        },
    )
    proc = cli("run", rc=1)
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr
    assert "No space left on device while writing " + str(root) in proc.stderr
    assert "p/make" in proc.stderr
    assert f"; nothing half-written was kept. {FREE_SPACE}\n" in proc.stderr  # the advice too
    assert list((root / ".pivot" / "stages").rglob("*.lock")) == []
    assert_nothing_half_written(root)
