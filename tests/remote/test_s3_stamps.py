"""S3 listings keep botocore's timestamps as the response's text (most listings never
read them): the times Pivot does read, the last-modified time of each listed key and
the start of a multipart upload, are still right, on a real S3 server."""

from __future__ import annotations

import datetime
import time

import pytest

from pivot.remote.s3 import S3Store, _epoch


def test_listed_keys_carry_their_size_and_last_modified_time(moto_s3):
    bucket = moto_s3.new_bucket()
    store = S3Store(bucket, moto_s3.options())
    before = time.time()
    store.put("r/packs/a", b"12345")
    store.put("r/packs/b", b"")
    after = time.time()
    assert store.list("r/packs") == ["r/packs/a", "r/packs/b"]
    stamped = store.list_stamped("r/packs")
    assert {key: size for key, (size, _) in stamped.items()} == {"r/packs/a": 5, "r/packs/b": 0}
    for _, modified in stamped.values():  # the server's clock is this machine's
        assert before - 2 <= modified <= after + 2


def test_only_uploads_older_than_the_age_given_are_aborted(seaweedfs):
    """On SeaweedFS: moto reports a fixed start time for every upload."""
    bucket = seaweedfs.new_bucket()
    store = S3Store(bucket, seaweedfs.options())
    seaweedfs.client().create_multipart_upload(Bucket=bucket, Key="r/packs/killed")
    assert store.abort_uploads("r/", 3600) == 0  # begun just now: a push may be running
    time.sleep(1.1)  # the start time has whole seconds
    assert store.abort_uploads("r/", 0) == 1
    assert seaweedfs.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-03T20:44:21.000Z", "2026-12-03T20:44:21+00:00"),
        ("2026-12-03T20:44:21Z", "2026-12-03T20:44:21+00:00"),
        ("2026-12-03T21:44:21.500+01:00", "2026-12-03T20:44:21.500000+00:00"),
        ("Thu, 03 Dec 2026 20:44:21 GMT", "2026-12-03T20:44:21+00:00"),
    ],
)
def test_response_timestamps_in_either_format_are_read(text, expected):
    assert _epoch(text) == datetime.datetime.fromisoformat(expected).timestamp()
