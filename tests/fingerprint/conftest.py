"""Fixtures of the fingerprint tests: an empty project folder, and two small projects."""

from __future__ import annotations

import sys

import pytest
from fp_support import HELPERS, MATHS, PIPELINE, ROWS, write

from pivot import fingerprint as fp


@pytest.fixture
def root(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    fp.clear_cache()
    before = set(sys.modules)
    yield project
    for name in set(sys.modules) - before:
        if name.startswith("_pivot_pipeline_test_"):
            del sys.modules[name]
    fp.clear_cache()


@pytest.fixture
def project(root):
    write(root, "pipeline.py", PIPELINE)
    write(root, "helpers.py", HELPERS)
    return root


@pytest.fixture
def local_project(root):
    write(root, "rows.py", ROWS)
    write(root, "helpers.py", HELPERS)
    write(root, "lib/__init__.py", "")
    write(root, "lib/maths.py", MATHS)
    return root
