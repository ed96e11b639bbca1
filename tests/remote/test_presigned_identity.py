"""The presigned URL of an S3 remote's identity object (remote/presigned.py): a no-op push
reads the identity through it with no boto3 client; an expired, tampered or refused URL
falls back to the client's read, and the push still answers right."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remote_support import make_project, push_all

from pivot.cache.state import StateDB
from pivot.remote import identity, presigned
from pivot.remote.index_cache import RemoteIndexCache
from pivot.remote.stores import INDEX, PACKS, Remote, open_remote

pytestmark = pytest.mark.s3
FILES = {"data/a.txt": b"alpha\n" * 100, "data/b.txt": b"beta\n" * 100, "model.bin": b"w" * 999}


@pytest.fixture(params=["moto_s3", "seaweedfs"])
def server(request):
    return request.getfixturevalue(request.param)


def fresh(server, bucket: str) -> Remote:
    """The remote as a new `pivot push` process opens it: no client made yet."""
    remote = open_remote(f"s3://{bucket}/pivot", name="test", options=server.options())
    assert not remote.store.s3.has_client
    return remote


def tag_of(project, remote: Remote) -> str:
    return RemoteIndexCache(project, remote).tag


def state_of(project) -> StateDB:
    return StateDB(project.state_path)


def set_record(project, remote: Remote, url: str, expiry: float) -> None:
    state = state_of(project)
    try:
        state.put(presigned.NAMESPACE, tag_of(project, remote), f"{int(expiry)} {url}".encode())
    finally:
        state.close()


def get_record(project, remote: Remote) -> bytes | None:
    state = state_of(project)
    try:
        return state.get(presigned.NAMESPACE, tag_of(project, remote))
    finally:
        state.close()


def pushed(tmp_path, server):
    """A project pushed in full to a new bucket, and that bucket's name."""
    bucket = server.new_bucket()
    src = make_project(tmp_path / "src", FILES)
    first = push_all(src, fresh(server, bucket))
    assert first.blobs == 4 and get_record(src, fresh(server, bucket)) is not None
    return src, bucket


def assert_noop(src, remote: Remote, *, client: bool) -> None:
    again = push_all(src, remote)
    assert (again.blobs, again.indexes, again.bytes_sent, again.missing) == (0, 0, 0, [])
    assert again.up_to_date > 0
    assert remote.store.s3.has_client is client


def test_a_noop_push_reads_the_identity_without_boto3(tmp_path, server):
    src, bucket = pushed(tmp_path, server)
    assert_noop(src, fresh(server, bucket), client=False)
    assert_noop(src, fresh(server, bucket), client=False)


def test_a_remote_emptied_by_hand_is_still_noticed(tmp_path, server):
    src, bucket = pushed(tmp_path, server)
    assert_noop(src, fresh(server, bucket), client=False)
    client = server.client()
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", ()):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    remote = fresh(server, bucket)
    again = push_all(src, remote)
    assert (again.blobs, again.up_to_date, again.missing) == (4, 0, [])
    assert remote.store.names(PACKS) and remote.store.names(INDEX)
    assert_noop(src, fresh(server, bucket), client=False)


def test_an_expired_url_falls_back_to_the_client_and_is_renewed(tmp_path, server):
    src, bucket = pushed(tmp_path, server)
    remote = fresh(server, bucket)
    url = get_record(src, remote).split(b" ", 1)[1].decode()
    set_record(src, remote, url, time.time() - 10)
    assert_noop(src, remote, client=True)
    renewed = int(get_record(src, remote).split(b" ", 1)[0])
    assert renewed > time.time() + presigned.EXPIRES - 3600
    assert_noop(src, fresh(server, bucket), client=False)


def test_a_url_the_server_finds_expired_falls_back(tmp_path, seaweedfs):
    """Signed for one second but recorded as valid for a day: the server refuses it."""
    src, bucket = pushed(tmp_path, seaweedfs)
    remote = fresh(seaweedfs, bucket)
    url = seaweedfs.client().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": f"pivot/{identity.KEY}"}, ExpiresIn=1
    )
    time.sleep(2.5)
    set_record(src, remote, url, time.time() + 86400)
    assert_noop(src, remote, client=True)
    assert get_record(src, remote).split(b" ", 1)[1].decode() != url


def test_a_url_signed_with_wrong_credentials_falls_back(tmp_path, seaweedfs):
    """A 403 (SeaweedFS checks signatures; moto accepts any) is no answer."""
    src, bucket = pushed(tmp_path, seaweedfs)
    remote = fresh(seaweedfs, bucket)
    wrong = seaweedfs.client(aws_secret_access_key="not-the-secret-key-at-all")
    url = wrong.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": f"pivot/{identity.KEY}"}
    )
    set_record(src, remote, url, time.time() + 86400)
    assert presigned.read(remote, state_of(src), tag_of(src, remote), identity.KEY, 52) is None
    assert_noop(src, remote, client=True)
    assert_noop(src, fresh(server=seaweedfs, bucket=bucket), client=False)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with `body` and remembers the paths asked."""

    body = b""
    paths: list[str] = []

    def do_GET(self):
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_a_tampered_url_is_not_fetched(tmp_path, server):
    """Another host serving the right id, another key holding a copy of it, another
    bucket: none is read; the push reads through the client instead."""
    src, bucket = pushed(tmp_path, server)
    remote = fresh(server, bucket)
    good = get_record(src, remote).split(b" ", 1)[1].decode()
    body = remote.get_bytes(identity.KEY)
    remote.put_bytes("copy-of-id", body)
    _Recorder.body, _Recorder.paths = body, []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        other_host = f"http://127.0.0.1:{httpd.server_port}/{bucket}/pivot/{identity.KEY}"
        client = server.client()
        other_key = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "pivot/copy-of-id"}
        )
        other_bucket = good.replace(f"/{bucket}/", f"/{server.new_bucket()}/")
        for url in (other_host, other_key, other_bucket, good.replace("http://", "https://")):
            remote = fresh(server, bucket)
            set_record(src, remote, url, time.time() + 86400)
            assert (
                presigned.read(remote, state_of(src), tag_of(src, remote), identity.KEY, 52) is None
            )
            assert_noop(src, remote, client=True)
        assert _Recorder.paths == []
    finally:
        httpd.shutdown()
        httpd.server_close()


ENDPOINT = "http://127.0.0.1:8333"


def _store(endpoint: str | None = ENDPOINT, prefix: str = "pivot"):
    options = {"endpoint_url": endpoint} if endpoint else {}
    return open_remote(f"s3://bkt/{prefix}" if prefix else "s3://bkt", options=options).store


@pytest.mark.parametrize(
    ("endpoint", "url", "ok"),
    [
        (ENDPOINT, f"{ENDPOINT}/bkt/pivot/pivot-remote-id?X-Amz-Signature=1", True),
        (ENDPOINT, "http://bkt.127.0.0.1:8333/pivot/pivot-remote-id?a=1", True),
        (ENDPOINT, "https://127.0.0.1:8333/bkt/pivot/pivot-remote-id", False),
        (ENDPOINT, "http://127.0.0.1:8334/bkt/pivot/pivot-remote-id", False),
        (ENDPOINT, "http://127.0.0.2:8333/bkt/pivot/pivot-remote-id", False),
        (ENDPOINT, "http://u:p@127.0.0.1:8333/bkt/pivot/pivot-remote-id", False),
        (ENDPOINT, f"{ENDPOINT}/other/pivot/pivot-remote-id", False),
        (ENDPOINT, f"{ENDPOINT}/bkt/pivot/pivot-remote-id2", False),
        (ENDPOINT, f"{ENDPOINT}/bkt/pivot%2Fpivot-remote-id", False),
        (ENDPOINT, f"{ENDPOINT}/bkt/x/../pivot/pivot-remote-id", False),
        (ENDPOINT, "ftp://127.0.0.1:8333/bkt/pivot/pivot-remote-id", False),
        (ENDPOINT, "http://127.0.0.1:99999/bkt/pivot/pivot-remote-id", False),
        (None, "https://bkt.s3.amazonaws.com/pivot/pivot-remote-id?x=1", True),
        (None, "https://bkt.s3.eu-west-1.amazonaws.com/pivot/pivot-remote-id", True),
        (None, "https://s3.eu-west-1.amazonaws.com/bkt/pivot/pivot-remote-id", True),
        (None, "http://bkt.s3.amazonaws.com/pivot/pivot-remote-id", False),
        (None, "https://bkt.s3.amazonaws.com.evil.example/pivot/pivot-remote-id", False),
        (None, "https://bkt.evil.example/pivot/pivot-remote-id", False),
    ],
)
def test_only_urls_of_this_remotes_identity_object_pass(endpoint, url, ok, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert presigned.addressed_to(url, _store(endpoint), identity.KEY) is ok


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=200)
    | st.builds(
        lambda n, url: f"{n} {url}".encode(),
        st.integers(-10, 10**13),
        st.text(max_size=60),
    )
)
def test_any_bytes_in_the_state_db_give_one_url_or_none(tmp_path_factory, data):
    state = StateDB(tmp_path_factory.mktemp("state") / "state.db")
    try:
        state.put(presigned.NAMESPACE, "tag", data)
        url = presigned.recorded(state, "tag", now=0)
        assert url is None or (
            url.isascii() and url.isprintable() and " " not in url and data.endswith(url.encode())
        )
        assert presigned.addressed_to(url, _store(), identity.KEY) in (True, False) if url else True
    finally:
        state.close()


def test_the_presigned_read_goes_through_the_environments_proxy(tmp_path, moto_s3, monkeypatch):
    """HTTP_PROXY is honoured as botocore honours it (the proxy here answers the id)."""
    src, bucket = pushed(tmp_path, moto_s3)
    remote = fresh(moto_s3, bucket)
    _Recorder.body, _Recorder.paths = remote.get_bytes(identity.KEY), []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{httpd.server_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        remote = fresh(moto_s3, bucket)
        assert_noop(src, remote, client=False)
        (asked,) = _Recorder.paths
        assert asked.startswith(f"{moto_s3.endpoint}/{bucket}/pivot/{identity.KEY}?")
    finally:
        httpd.shutdown()
        httpd.server_close()
