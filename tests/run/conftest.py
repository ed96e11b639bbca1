"""Fixtures of the executor tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def worker_dir(tmp_path, monkeypatch):
    """A Dask worker's folder for tasks run in this process; its stage server closed after."""
    from pivot.run import worker

    monkeypatch.setenv("PIVOT_WORKER_DIR", str(tmp_path / "worker"))
    yield tmp_path / "worker"
    server = getattr(worker._SERVERS, "server", None)
    if server is not None:
        worker._SERVERS.server = None
        server.close()
