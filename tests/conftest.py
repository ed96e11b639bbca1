"""Shared fixtures: real projects in temp dirs, driven through the real CLI."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from fsspec_servers import (  # noqa: F401  (fixtures for every test)
    azure_server,
    ftp_server,
    gcs_server,
    sftp_server,
    webdav_server,
)
from s3_servers import isolated_aws_env, moto_s3, seaweedfs  # noqa: F401  (fixtures for every test)
from support import PYTHONPATH, PivotCLI


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
