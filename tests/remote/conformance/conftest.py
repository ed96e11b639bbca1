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


def _server(server_fixture: str):
    def opener(request, tmp_path) -> Remote:
        server = request.getfixturevalue(server_fixture)
        return open_remote(server.url(), name="test", options=server.options)

    return opener


BACKENDS = {
    "local": _local,
    "memory": _memory,
    "moto": _s3("moto_s3"),
    "seaweedfs": _s3("seaweedfs"),
    "ftp": _server("ftp_server"),
    "sftp": _server("sftp_server"),
    "webdav": _server("webdav_server"),
    "gcs": _server("gcs_server"),
    "azure": _server("azure_server"),
}
# Backends every scenario runs on; the others run the scenarios marked `every_backend`
# (push, pull, interrupted push, flipped byte, the store contract), which keeps the suite
# fast while each server still sees each kind of request.
FULL = ("local", "memory", "moto", "seaweedfs")


def pytest_generate_tests(metafunc) -> None:
    if "remote" in metafunc.fixturenames:
        every = metafunc.definition.get_closest_marker("every_backend") is not None
        names = list(BACKENDS) if every else FULL
        s3 = [pytest.mark.s3]
        metafunc.parametrize(
            "remote",
            [pytest.param(n, marks=s3 if n in ("moto", "seaweedfs") else []) for n in names],
            indirect=True,
        )


@pytest.fixture
def remote(request, tmp_path) -> Remote:
    """An empty remote named 'test' on each backend in turn."""
    return BACKENDS[request.param](request, tmp_path)
