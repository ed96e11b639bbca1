"""Push / fetch / pull against real S3 servers on loopback (SeaweedFS and moto)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import pytest
from remote_support import clone, files_of, make_project, runs_on_remote

from pivot.cache.hashing import hash_bytes
from pivot.cache.runs import RunRecords
from pivot.cache.store import LocalCache
from pivot.errors import PivotError
from pivot.project import Project
from pivot.remote import transfer
from pivot.remote.stores import Remote, open_remote
from pivot.run.lockfile import load_locks

pytestmark = pytest.mark.s3
ROOT = pathlib.Path(__file__).resolve().parents[2]


def push_all(project: Project, remote: Remote, **kw) -> transfer.TransferSummary:
    return transfer.push_locks(
        project, remote, load_locks(project), RunRecords(project.cache_dir).keys(), **kw
    )


def small_files(n: int, tag: str = "") -> dict[str, bytes]:
    return {f"data/f{i:04d}.txt": f"{tag} row {i}\n".encode() * 50 for i in range(n)}


@pytest.fixture
def weed_remote(seaweedfs):
    bucket = seaweedfs.new_bucket()
    return open_remote(f"s3://{bucket}/cache", name="weed", options=seaweedfs.options())


def test_push_pull_round_trip_seaweedfs(tmp_path, weed_remote):
    files = {
        **small_files(300),
        "model/noise.bin": os.urandom(36 << 20),  # large, raw: multipart up and down
        # large, zstd: ~17 MB compressed, so uploaded as a multipart stream of 8 MB parts
        "model/text.bin": os.urandom(16 << 20).hex().encode(),
    }
    src = make_project(tmp_path / "src", files)
    pushed = push_all(src, weed_remote)
    assert pushed.blobs == 304 and pushed.missing == [] and pushed.runs == 1
    dst = clone(src, tmp_path / "dst")
    result = transfer.pull_locks(dst, weed_remote, load_locks(dst))
    assert result.incomplete == [] and result.summary.blobs == 304
    assert files_of(dst.root) == files_of(src.root)


def test_damaged_large_blob_aborts_its_multipart_upload(tmp_path, seaweedfs, weed_remote):
    text = os.urandom(12 << 20).hex().encode()  # ~13 MB compressed: two parts
    src = make_project(tmp_path / "src", {"text.bin": text})
    obj = LocalCache(src.cache_dir, src.tmp_dir).path(hash_bytes(text))
    obj.chmod(0o644)
    obj.write_bytes(b"?" + text[1:])
    with pytest.raises(PivotError, match="does not match its hash"):
        push_all(src, weed_remote)
    bucket, prefix = weed_remote.root.split("/", 1)
    client = seaweedfs.client()
    assert client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_noop_push_sends_nothing(tmp_path, weed_remote, monkeypatch):
    src = make_project(tmp_path / "src", small_files(50))
    push_all(src, weed_remote)
    indexes = weed_remote.list_indexes()
    calls = []
    for name in ("put_bytes", "put_parts", "get_bytes", "get_range", "get_file"):
        original = getattr(Remote, name)

        def counted(self, *args, _name=name, _original=original):
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(Remote, name, counted)
    again = push_all(src, weed_remote)
    assert (again.blobs, again.indexes, again.bytes_sent) == (0, 0, 0)
    assert calls == [] and weed_remote.list_indexes() == indexes


def test_interrupted_push_then_repush(tmp_path, weed_remote, monkeypatch):
    src = make_project(tmp_path / "src", small_files(40))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the packs, before the index")

    monkeypatch.setattr(transfer, "store_index", killed)
    with pytest.raises(KeyboardInterrupt):
        push_all(src, weed_remote)
    monkeypatch.undo()
    assert weed_remote.list_indexes() == [] and weed_remote.list_packs()
    dst = clone(src, tmp_path / "dst")
    assert len(transfer.fetch_locks(dst, weed_remote, load_locks(dst)).missing) == 1
    assert push_all(src, weed_remote).blobs == 41
    result = transfer.pull_locks(dst, weed_remote, load_locks(dst))
    assert result.incomplete == [] and files_of(dst.root) == files_of(src.root)


def test_flipped_byte_detected_naming_the_pack(tmp_path, seaweedfs, weed_remote):
    src = make_project(tmp_path / "src", small_files(20))
    push_all(src, weed_remote)
    (pack_id,) = weed_remote.list_packs()
    client = seaweedfs.client()
    bucket, prefix = weed_remote.root.split("/", 1)
    key = f"{prefix}/{Remote.pack_key(pack_id)}"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 3] ^= 0x20
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    dst = clone(src, tmp_path / "dst")
    with pytest.raises(PivotError, match=pack_id):
        transfer.fetch_locks(dst, weed_remote, load_locks(dst))
    cache = LocalCache(dst.cache_dir, dst.tmp_dir)
    for rel, content in small_files(20).items():
        if cache.has(hash_bytes(content)):  # what entered the cache is intact
            assert cache.read_bytes(hash_bytes(content)) == content, rel


def test_concurrent_pushers(tmp_path, weed_remote):
    shared = small_files(100, "shared")
    projects = [
        make_project(tmp_path / f"p{i}", {**shared, f"data/own{i}": f"{i}".encode() * 99}, f"p/{i}")
        for i in range(3)
    ]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(projects))

    def run(project):
        try:
            barrier.wait()
            push_all(project, weed_remote, jobs=4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in projects]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for src in projects:
        dst = clone(src, tmp_path / f"dst-{src.root.name}")
        result = transfer.pull_locks(dst, weed_remote, load_locks(dst))
        assert result.incomplete == [] and files_of(dst.root) == files_of(src.root)


def _error_of(remote: Remote, tmp_path) -> str:
    src = make_project(tmp_path / "src", {"x.txt": b"x"})
    with pytest.raises(PivotError) as info:
        push_all(src, remote)
    return str(info.value)


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
    assert "the bucket does not exist" in message and "Create it" in message
    assert seaweedfs.secret_key not in message


def test_unreachable_endpoint_is_a_clear_error(tmp_path, seaweedfs):
    from support import free_ports

    (port,) = free_ports(1)
    options = seaweedfs.options(endpoint_url=f"http://127.0.0.1:{port}")
    remote = open_remote("s3://bucket/c", name="weed", options=options)
    message = _error_of(remote, tmp_path)
    assert "cannot reach" in message and f"127.0.0.1:{port}" in message
    assert seaweedfs.secret_key not in message


def test_moto_round_trip_with_run_records(tmp_path, moto_s3):
    bucket = moto_s3.new_bucket()
    remote = open_remote(f"s3://{bucket}", name="moto", options=moto_s3.options())
    model = os.urandom(10 << 20).hex().encode()  # ~11 MB compressed: a multipart upload
    files = {**small_files(30), "single.txt": b"one file\n", "model.txt": model}
    src = make_project(tmp_path / "src", files)
    (lock,) = load_locks(src)
    assert push_all(src, remote).runs == 1
    dst = clone(src, tmp_path / "dst")
    assert runs_on_remote(dst, remote, [lock.run_key]) == {lock.run_key}
    summary = transfer.fetch_outputs(dst, remote, [], [lock.run_key])
    assert summary.runs == 1 and summary.missing == []
    result = transfer.pull_locks(dst, remote, load_locks(dst))
    assert result.incomplete == [] and files_of(dst.root) == files_of(src.root)


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
        from pivot.cache.store import LocalCache
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
