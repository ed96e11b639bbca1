"""Real servers on 127.0.0.1 for the fsspec backends: FTP (pyftpdlib), SFTP (asyncssh),
WebDAV (wsgidav), Google Cloud Storage (gcp-storage-emulator) and Azure Blob (Azurite).

Each is a context manager (`run_ftp`, ..., also used by bench/remote_backends.py) and a
session fixture yielding a `Server`: a url prefix for a fresh remote root, and
the options (credentials included) a remote needs. The Python servers run in threads of
the test process; Azurite runs as a node process, installed from npm into a cache folder
the first time (node and npm are on every machine of this project).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from loopback import server_process
from support import free_ports

USER = "pivot"
PASSWORD = "pw-7Hq2-secret"
READER = "reader"  # may list and read, not write (FTP)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_VERSION = "3.35.0"
AZURITE_CACHE = pathlib.Path(
    os.environ.get("PIVOT_TEST_CACHE") or pathlib.Path.home() / ".cache" / "pivot-tests"
)


@dataclass(frozen=True)
class Server:
    """A test server for one protocol: `url(root)` names a remote root on it, `options`
    are what `pivot remote modify` would set (secrets included)."""

    protocol: str
    base: str
    options: dict[str, Any] = field(default_factory=dict)
    home: pathlib.Path | None = None  # the folder it serves, for a file-backed server

    def url(self, root: str | None = None) -> str:
        return f"{self.base}/{root or uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def run_ftp(home: pathlib.Path) -> Iterator[Server]:
    """pyftpdlib in a thread serving `home`: user `pivot` may write, `reader` may only
    read."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, str(home), perm="elradfmwMT")
    authorizer.add_user(READER, PASSWORD, str(home), perm="elr")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "auth_failed_timeout": 0})
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    server.max_cons = 64
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"timeout": 0.2, "handle_exit": False}, daemon=True
    )
    thread.start()
    port = server.address[1]
    try:
        yield Server(
            "ftp", f"ftp://127.0.0.1:{port}", {"username": USER, "password": PASSWORD}, home
        )
    finally:
        server.close_all()
        thread.join(5)


@contextlib.contextmanager
def run_sftp(home: pathlib.Path) -> Iterator[Server]:
    """An asyncssh SSH server with SFTP (chrooted to `home`) on its own event loop in a
    thread; password login for `pivot`."""
    import asyncssh

    class Auth(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == USER and password == PASSWORD

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        return await asyncssh.create_server(
            Auth,
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(home).encode()),
        )

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Server(
            "sftp",
            f"sftp://127.0.0.1:{port}",
            {"username": USER, "password": PASSWORD, "known_hosts": "none"},
            home,
        )
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@contextlib.contextmanager
def run_webdav(home: pathlib.Path) -> Iterator[Server]:
    """wsgidav on cheroot in a thread, serving `home`; basic auth for `pivot`."""
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    app = WsgiDAVApp(
        {
            "provider_mapping": {"/": str(home)},
            "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
            "http_authenticator": {
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            "verbose": 0,
            "logging": {"enable": False, "enable_loggers": []},
            "lock_storage": True,
        }
    )
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=16)
    server.prepare()
    port = server.bind_addr[1]
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield Server(
            "webdav", f"webdav://127.0.0.1:{port}", {"user": USER, "password": PASSWORD}, home
        )
    finally:
        server.stop()
        thread.join(5)


@contextlib.contextmanager
def run_gcs() -> Iterator[Server]:
    """gcp-storage-emulator (in memory) in a thread, with the bucket `pivot`."""
    from gcp_storage_emulator import server as emulator

    (port,) = free_ports(1)
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="pivot")
    read_data = emulator._read_data
    emulator._read_data = _exact_multipart(emulator, read_data)
    server.start()
    try:
        yield Server(
            "gs",
            "gs://pivot",
            {"endpoint_url": f"http://127.0.0.1:{port}", "token": "anon", "project": "test"},
        )
    finally:
        server.stop()
        emulator._read_data = read_data


def _exact_multipart(emulator: Any, read_data: Any) -> Any:
    """The emulator's request-body reader, with multipart uploads split byte for byte.

    The emulator parses them with `email`'s parser, which takes a carriage return that
    ends the content for part of the line break before the closing boundary (gcsfs ends
    its lines with a bare line feed): an object whose last byte is 0x0D was stored one byte
    short, so about one upload in 256 of random content failed a test about something else."""

    def exact(handler: Any, query: Any) -> Any:
        kind = handler.headers.get("Content-Type") or ""
        found = re.search(r'boundary="?([^";]+)"?', kind)
        if not kind.startswith("multipart/related") or found is None:
            return read_data(handler, query)
        raw = emulator._decode_raw_data(emulator._read_raw_data(handler), handler)
        _, meta, content, *_ = raw.split(b"--" + found.group(1).encode())
        parts = []
        for part in (meta, content):
            eol = b"\r\n" if part.startswith(b"\r\n") else b"\n"
            head, _, body = part[len(eol) :].partition(eol + eol)
            parts.append((head, body[: -len(eol)]))
        kind_line = [
            line for line in parts[1][0].split(eol) if line.lower().startswith(b"content-type:")
        ]
        return {
            "meta": json.loads(parts[0][1]),
            "content": parts[1][1],
            "content-type": kind_line[0].split(b":", 1)[1].strip().decode() if kind_line else "",
        }

    return exact


def _azurite_binary() -> pathlib.Path:
    """Azurite's blob server, installed from npm into the test cache when missing.

    npm writes into a private folder that is renamed into place whole, marked complete, so
    test processes installing at once (or one killed mid-install) never leave a half-written
    install that a later run would take for a good one."""
    prefix = AZURITE_CACHE / f"azurite-{AZURITE_VERSION}"
    binary = prefix / "node_modules" / ".bin" / "azurite-blob"
    if (prefix / ".complete").exists():
        return binary
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to install Azurite for the Azure tests")
    AZURITE_CACHE.mkdir(parents=True, exist_ok=True)
    partial = AZURITE_CACHE / f".{prefix.name}.{uuid.uuid4().hex}.partial"
    subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(partial),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"azurite@{AZURITE_VERSION}",
        ],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    (partial / ".complete").touch()
    if prefix.exists() and not (prefix / ".complete").exists():
        # An install the fixture's earlier, non-atomic form left: moved aside, then removed.
        stale = AZURITE_CACHE / f".{prefix.name}.{uuid.uuid4().hex}.stale"
        with contextlib.suppress(OSError):
            prefix.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        partial.rename(prefix)
    except OSError:  # another process's complete install won the rename
        shutil.rmtree(partial, ignore_errors=True)
    return binary


@contextlib.contextmanager
def run_azurite(base: pathlib.Path) -> Iterator[Server]:
    """Azurite's blob service (node, data under `base`) with the container `pivot`."""
    binary = _azurite_binary()
    (port,) = free_ports(1)
    cmd = [
        str(binary),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(base),
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
    ]
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )

    def make_container() -> None:
        from adlfs import AzureBlobFileSystem

        fs = AzureBlobFileSystem(connection_string=connection, skip_instance_cache=True)
        fs.mkdir("pivot")

    with server_process("Azurite", cmd, base / "azurite.log", make_container):
        yield Server("az", "az://pivot", {"connection_string": connection})


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory) -> Iterator[Server]:
    with run_ftp(tmp_path_factory.mktemp("ftp")) as server:
        yield server


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory) -> Iterator[Server]:
    with run_sftp(tmp_path_factory.mktemp("sftp")) as server:
        yield server


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory) -> Iterator[Server]:
    with run_webdav(tmp_path_factory.mktemp("webdav")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Server]:
    with run_gcs() as server:
        yield server


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory) -> Iterator[Server]:
    with run_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server
