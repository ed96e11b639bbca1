"""The backends every conformance test runs on: one `remote` fixture, one opener each.

A new object store joins the suite with one opener here: every test in this folder then
holds it to the contract of `pivot.remote.stores.ObjectStore` and to push, fetch and pull.
"""

from __future__ import annotations

import uuid

import pytest

from pivot.remote.stores import Remote, open_remote


def _local(request, tmp_path) -> Remote:
    (tmp_path / "remote").mkdir()  # an empty remote, as a bucket is (a missing folder is refused)
    return open_remote(str(tmp_path / "remote"), name="test")


def _memory(request, tmp_path) -> Remote:
    remote = open_remote(f"memory://pivot-test-{uuid.uuid4().hex}", name="test")
    fs = remote.store.fs  # one process-wide filesystem: free what this test stored
    request.addfinalizer(lambda: fs.exists(remote.root) and fs.rm(remote.root, recursive=True))
    return remote


_CLIENTS: dict[str, object] = {}


def _s3(server_fixture: str):
    def opener(request, tmp_path) -> Remote:
        server = request.getfixturevalue(server_fixture)
        bucket = server.new_bucket()
        remote = open_remote(f"s3://{bucket}/pivot", name="test", options=server.options())
        # One client per server for the whole session, as one process would keep it: a
        # new boto3 client costs more than most of these tests.
        key = server.endpoint
        if key not in _CLIENTS:
            _CLIENTS[key] = remote.store.s3.client
        remote.store.s3._client = _CLIENTS[key]
        return remote

    return opener


BACKENDS = {
    "local": _local,
    "memory": _memory,
    "moto": _s3("moto_s3"),
    "seaweedfs": _s3("seaweedfs"),
}


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.s3] if name in ("moto", "seaweedfs") else [])
        for name in BACKENDS
    ]
)
def remote(request, tmp_path) -> Remote:
    """An empty remote named 'test' on each backend in turn."""
    return BACKENDS[request.param](request, tmp_path)
