"""What only an S3 remote can do wrong (credentials, buckets, endpoints) and streaming of
very large outputs, on a real SeaweedFS on loopback; push, fetch and pull on S3 are in
tests/remote/conformance/."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from remote_support import make_project, push_all

from pivot.cli.advice import paragraph
from pivot.errors import RemoteError
from pivot.remote.stores import Remote, open_remote

pytestmark = pytest.mark.s3
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def weed_remote(seaweedfs):
    bucket = seaweedfs.new_bucket()
    return open_remote(f"s3://{bucket}/cache", name="weed", options=seaweedfs.options())


def _error_of(remote: Remote, tmp_path) -> str:
    src = make_project(tmp_path / "src", {"x.txt": b"x"})
    with pytest.raises(RemoteError) as info:
        push_all(src, remote)
    assert info.value.remote == remote.name
    return paragraph(info.value)  # what the user reads: the message and the CLI's advice


def test_wrong_secret_is_a_clear_error(tmp_path, seaweedfs):
    bucket = seaweedfs.new_bucket()
    wrong = "definitely-wrong-secret-123"
    remote = open_remote(
        f"s3://{bucket}/c", name="weed", options=seaweedfs.options(secret_access_key=wrong)
    )
    message = _error_of(remote, tmp_path)
    assert "access denied" in message and "'weed'" in message
    assert wrong not in message and seaweedfs.secret_key not in message


def test_missing_credentials_is_a_clear_error(tmp_path, seaweedfs):
    bucket = seaweedfs.new_bucket()
    options = seaweedfs.options(access_key_id=None, secret_access_key=None)
    remote = open_remote(f"s3://{bucket}/c", name="weed", options=options)
    message = _error_of(remote, tmp_path)
    assert "no usable credentials" in message or "access denied" in message
    assert seaweedfs.secret_key not in message


def test_unknown_bucket_is_a_clear_error(tmp_path, seaweedfs):
    remote = open_remote("s3://no-such-bucket-pivot/c", name="weed", options=seaweedfs.options())
    message = _error_of(remote, tmp_path)
    assert message == (
        "Cannot list the indexes of remote 'weed' (s3://no-such-bucket-pivot/c): the bucket "
        "does not exist (bucket does not exist: The specified bucket does not exist). Create "
        "it, or fix the url with `pivot remote modify weed url s3://BUCKET/PREFIX`."
    )


def test_unreachable_endpoint_is_a_clear_error(tmp_path, seaweedfs):
    from support import free_ports

    (port,) = free_ports(1)
    options = seaweedfs.options(endpoint_url=f"http://127.0.0.1:{port}")
    remote = open_remote("s3://bucket/c", name="weed", options=options)
    message = _error_of(remote, tmp_path)
    assert "cannot reach" in message and f"127.0.0.1:{port}" in message
    assert seaweedfs.secret_key not in message


def test_large_file_streams_with_bounded_memory(tmp_path, seaweedfs, weed_remote):
    """384 MiB outputs (one raw, one compressible) move with a peak RSS of ~120 MB.

    The peak is the process's own high-water mark (VmHWM): `ru_maxrss` would also count
    the RSS of the pytest worker it was forked from, which Linux keeps across exec. The
    bound is the issue's (a 2 GB file under 300 MB); buffers do not grow with the size.
    """
    script = textwrap.dedent(
        """
        import os, pathlib, sys
        from pivot.run.lockfile import Lock, write_lock
        from pivot.project import Project, init_project
        from pivot.remote import transfer
        from pivot.cache.objects import LocalCache
        from pivot.remote.stores import open_remote

        base = pathlib.Path(sys.argv[1])
        options = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        remote = open_remote(sys.argv[2], name="weed", options=options)
        src, dst = Project(base / "src"), Project(base / "dst")
        init_project(src.root); init_project(dst.root)
        block = os.urandom(1 << 20)
        for name, chunk in (("noise.bin", None), ("text.bin", b"pivot stream " * 80660)):
            with open(src.root / name, "wb") as out:
                for i in range(384):
                    out.write(chunk[: 1 << 20] if chunk else block[i:] + block[:i])
        cache = LocalCache(src.cache_dir, src.tmp_dir)
        outs = {}
        for name in ("noise.bin", "text.bin"):
            digest, size = cache.add_file(src.root / name)
            outs[name] = {"hash": digest, "size": size, "kind": "file"}
        def peak_mb():
            status = pathlib.Path("/proc/self/status").read_text()
            return int(status.split("VmHWM:")[1].split()[0]) // 1024

        before = peak_mb()
        for name, out in outs.items():  # one at a time: the bound is per large blob
            lock = Lock("p/big", "a" * 64, {}, {}, {}, {name: out})
            transfer.push_locks(src, remote, [lock])
            result = transfer.pull_locks(dst, remote, [lock])
            assert not result.incomplete, result.incomplete
        peak = peak_mb()
        for name, out in outs.items():
            assert cache.add_file(dst.root / name)[0] == out["hash"]
        print(before, peak)
        """
    )
    options = seaweedfs.options()
    args = [x for kv in options.items() for x in kv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), f"s3://{weed_remote.root}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, peak = map(int, proc.stdout.split())
    assert before < 100 and peak < 300, f"peak RSS {peak} MB while moving 384 MiB outputs"
