"""`pivot --help` and a no-op `pivot run` must not pay for heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from spec_projects import PARENT_CHILD
from support import PYTHONPATH, write_files

HEAVY = ("s3fs", "boto3", "botocore", "aiobotocore", "pandas", "rich", "tqdm", "fsspec", "yaml")
PROBE = """
import json, sys
sys.argv = ["pivot", *{args!r}]
from pivot.cli.main import main
try:
    main()
finally:
    print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def imported_heavy_modules(cwd, *args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args), heavy=HEAVY)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        check=False,
    )
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [("--help",), ("run", "--help")])
def test_help_imports_nothing_heavy(tmp_path, args) -> None:
    assert imported_heavy_modules(tmp_path, *args) == []


def test_noop_run_imports_nothing_heavy(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    pivot("run", cwd="analysis")
    assert imported_heavy_modules(project / "analysis", "run") == []
