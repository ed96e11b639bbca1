"""The generic fsspec store on servers with directories (FTP, SFTP, WebDAV): old temp
objects of killed pushes cleaned, young ones kept, and a refused login told as such on
each protocol, without the password."""

from __future__ import annotations

import time
import uuid

import pytest
from fsspec_servers import PASSWORD

from pivot.errors import PivotError, RemoteUnreachable
from pivot.remote.stores import FsspecObjects, Remote, open_remote

SERVERS = ["ftp_server", "sftp_server", "webdav_server"]


def _open(server, **options) -> Remote:
    return open_remote(server.url(), name="box", options={**server.options, **options})


@pytest.mark.parametrize("fixture", SERVERS)
def test_clean_removes_only_old_temp_objects(request, fixture):
    server = request.getfixturevalue(fixture)
    remote = _open(server)
    store = remote.store
    assert isinstance(store, FsspecObjects) and store.directories
    remote.put_bytes("packs/ab/kept", b"pack")
    old = f".abc.{int(time.time()) - 3 * 86400}.{uuid.uuid4().hex}.tmp"
    young = f".abd.{int(time.time())}.{uuid.uuid4().hex}.tmp"
    for name in (old, young):
        store.fs.pipe_file(f"{store.root}/packs/ab/{name}", b"partial")
    assert remote.clean_uploads(86400) == 1
    assert sorted(store.names("packs")) == sorted(["kept", young])


@pytest.mark.parametrize("fixture", SERVERS)
def test_refused_login_is_named_without_the_password(request, fixture):
    server = request.getfixturevalue(fixture)
    remote = _open(server, password="wrong-" + PASSWORD)
    with pytest.raises(RemoteUnreachable) as info:
        remote.list_indexes()
    message = str(info.value)
    assert "refused the login" in message and "'box'" in message, message
    assert PASSWORD not in message and "PIVOT_REMOTE_BOX_PASSWORD" in message


@pytest.mark.parametrize(
    "root",
    ["memory://box/a401b", "memory://box/401/x", "memory://box/r(401)", "memory://box/a,401,b"],
)
def test_missing_object_under_a_path_with_401_is_missing_not_a_refused_login(root):
    remote = open_remote(f"{root}/{uuid.uuid4().hex}", name="box")
    remote.put_bytes("packs/ab/present", b"x")
    with pytest.raises(PivotError) as info:
        remote.get_bytes("packs/ab/absent")
    message = str(info.value)
    assert "an object is missing" in message and "refused the login" not in message, message
