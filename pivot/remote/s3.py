"""S3 objects through boto3's client: listings, (ranged) gets, puts, multipart uploads of
parts as they are produced, and managed file downloads.

Pivot's remote needs these few object operations; boto3 does each with one client shared by
every transfer thread (why not s3fs: docs/architecture.md, Deviations).

Library errors are translated to the Python exceptions `remote.describe_error` explains
(a missing bucket or key -> FileNotFoundError, a refused request -> PermissionError, a
range past the object's end -> no bytes, as from a file);
credential and connection errors keep their botocore class.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

# Large objects are downloaded in ranged parts of CHUNK bytes and uploaded in the parts
# they are produced in, CONCURRENCY parts at a time: memory stays bounded (about
# CHUNK x CONCURRENCY per transfer).
CHUNK = 8 << 20
CONCURRENCY = 4
_MISSING_BUCKET = ("NoSuchBucket",)
_MISSING_KEY = ("NoSuchKey", "404", "NotFound")
_DENIED = (
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
)


class S3Store:
    """The objects under `bucket` on one S3 endpoint (the client is made on first use)."""

    def __init__(self, bucket: str, options: dict[str, Any]) -> None:
        self.bucket = bucket
        self.options = options
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def has_client(self) -> bool:
        """Whether the client was made (boto3 imported) already."""
        return self._client is not None

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _make_client(self.options)
        return self._client

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix/`."""
        with _translated(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{prefix}/"
            )
            return [item["Key"] for page in pages for item in page.get("Contents", ())]

    def list_stamped(self, prefix: str) -> dict[str, tuple[int, float]]:
        """Every key under `prefix/`, with its size and last-modified time (epoch s)."""
        with _translated(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{prefix}/"
            )
            return {
                item["Key"]: (int(item["Size"]), _epoch(item["LastModified"]))
                for page in pages
                for item in page.get("Contents", ())
            }

    def delete(self, key: str) -> None:
        with _translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or bytes [start, end) of it."""
        extra = {} if start is None else {"Range": f"bytes={start}-{(end or 0) - 1}"}
        try:
            with _translated(key):
                response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
                with response["Body"] as body:
                    return body.read()
        except _PastEnd:
            return b""

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, end: int | None) -> Iterator[Any]:
        """The response body of a ranged GET (to the end if `end` is None), as a stream."""
        last = "" if end is None else end - 1
        try:
            with _translated(key):
                response = self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{last}"
                )
        except _PastEnd:
            yield io.BytesIO()
            return
        with response["Body"] as body, _translated(key):
            yield body

    def get_file(self, key: str, dest: str) -> None:
        with _translated(key):
            self.client.download_file(self.bucket, key, dest, Config=_transfer_config())

    def put(self, key: str, data: bytes) -> None:
        with _translated(key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def put_parts(self, key: str, parts: Iterable[bytes]) -> None:
        """Store the concatenation of `parts` (each but the last at least 5 MiB) as it is
        produced: a multipart upload with up to CONCURRENCY parts in flight, aborted if
        producing or sending a part fails. A single part is one plain PUT."""
        produced = iter(parts)
        first = next(produced, b"")
        second = next(produced, None)
        if second is None:
            self.put(key, first)
            return
        client = self.client
        with _translated(key):
            upload = client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ChecksumAlgorithm="CRC32"
            )["UploadId"]

        def send(number: int, body: bytes) -> dict[str, Any]:
            with _translated(key):
                response = client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=number,
                    Body=body,
                    ChecksumAlgorithm="CRC32",
                )
            part = {"PartNumber": number, "ETag": response["ETag"]}
            if "ChecksumCRC32" in response:
                part["ChecksumCRC32"] = response["ChecksumCRC32"]
            return part

        pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="pivot-part")
        try:
            pending: deque[Future] = deque()
            sent = []
            for number, body in enumerate(itertools.chain((first, second), produced), 1):
                if len(pending) == CONCURRENCY:
                    sent.append(pending.popleft().result())
                pending.append(pool.submit(send, number, body))
            sent.extend(future.result() for future in pending)
            with _translated(key):
                client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload,
                    MultipartUpload={"Parts": sent},
                )
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise
        finally:
            pool.shutdown(wait=True)

    def abort_uploads(self, prefix: str, max_age: float) -> int:
        """Abort the multipart uploads under `prefix` begun over `max_age` seconds ago
        (those of pushes killed before they could abort them); returns how many."""
        import time

        cutoff = time.time() - max_age
        aborted = 0
        with _translated(prefix):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            stale = [
                upload
                for page in pages
                for upload in page.get("Uploads", ())
                if _epoch(upload["Initiated"]) <= cutoff
            ]
            for upload in stale:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
        return aborted


def _epoch(stamp: Any) -> float:
    """A timestamp of a response (left as its text: see `_make_client`) in epoch seconds."""
    import datetime

    if isinstance(stamp, str):
        try:  # S3 listings give ISO 8601 (`2026-12-03T20:44:21.000Z`)
            parsed = datetime.datetime.fromisoformat(stamp)
        except ValueError:
            from botocore.utils import parse_timestamp

            parsed = parse_timestamp(stamp)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        return parsed.timestamp()
    return stamp.timestamp()


def _make_client(options: dict[str, Any]) -> Any:
    import boto3
    import botocore.session
    from botocore.config import Config

    # Timestamps stay the text of the response (as the AWS CLI keeps them): botocore
    # would parse one per key of every listing, which most listings never read
    # (`list_stamped` parses its own, `_epoch`).
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    session = boto3.session.Session(
        botocore_session=core,
        profile_name=_opt(options, "profile"),
        aws_access_key_id=_opt(options, "access_key_id"),
        aws_secret_access_key=_opt(options, "secret_access_key"),
        aws_session_token=_opt(options, "session_token"),
    )
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=64,
        # No SHA-256 of every body (botocore signs bodies on plain-http endpoints): the
        # CRC32 checksum still guards each upload, and every fetched blob is verified.
        s3={"payload_signing_enabled": False},
    )
    return session.client(
        "s3",
        endpoint_url=_opt(options, "endpoint_url"),
        region_name=_opt(options, "region"),
        config=config,
    )


def _opt(options: dict[str, Any], key: str) -> str | None:
    value = options.get(key)
    return str(value) if value else None


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=CHUNK,
        multipart_chunksize=CHUNK,
        max_concurrency=CONCURRENCY,
        use_threads=True,
    )


class _PastEnd(Exception):
    """A ranged GET that starts at or after the object's end: read as no bytes, as a
    file would be."""


@contextlib.contextmanager
def _translated(key: str) -> Iterator[None]:
    """Turns botocore's ClientError into the exception a caller can explain."""
    try:
        yield
    except Exception as raised:
        from botocore.exceptions import ClientError

        # boto3's managed transfers wrap the ClientError.
        exc = raised if isinstance(raised, ClientError) else raised.__context__
        if not isinstance(exc, ClientError):
            raise
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        if code in _MISSING_BUCKET:
            raise FileNotFoundError(f"bucket does not exist: {message}") from None
        if code == "InvalidRange":
            raise _PastEnd(key) from None
        if code in _MISSING_KEY:
            raise FileNotFoundError(f"{key}: {message}") from None
        if code in _DENIED:
            raise PermissionError(f"{code}: {message}") from None
        raise exc from None
