"""Fixtures of the local cache tests: an empty cache and one holding the sample tree."""

from __future__ import annotations

import os

import pytest
from cache_support import TREE, write_tree

from pivot.cache.objects import LocalCache


@pytest.fixture
def cache(tmp_path) -> LocalCache:
    (tmp_path / "ws").mkdir()  # the folder outputs are checked out into (it must exist)
    return LocalCache(tmp_path / "cache", tmp_path / "tmp")


@pytest.fixture
def stored(tmp_path, cache):
    src = write_tree(tmp_path / "src", TREE)
    return cache.add_output(src, tmp_path)[0]


@pytest.fixture
def umask_077():
    old = os.umask(0o077)
    yield
    os.umask(old)
