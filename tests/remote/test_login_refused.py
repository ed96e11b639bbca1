"""Which remote errors read as a refused login: HTTP 401 as the error object or its
message states the status, never the digits 401 inside an object key, a path or a URL."""

from __future__ import annotations

import uuid

import pytest
from aiohttp import ClientResponseError, RequestInfo
from botocore.exceptions import ClientError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from pivot.errors import PivotError
from pivot.remote.stores import describe_error, open_remote

KEYS = ["runs/report(401).csv", "runs/a,401,b", "runs/(401)", "runs/x,401"]


def _message(exc: BaseException) -> str:
    remote = open_remote(f"memory://box/{uuid.uuid4().hex}", name="box")
    return describe_error(remote, "read from", exc)[1]


def _boto(status: int, code: str) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "Unauthorized" if status == 401 else "Not Found"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "HeadObject")  # type: ignore[arg-type]


def _aiohttp(status: int, key: str) -> ClientResponseError:
    url = URL(f"http://127.0.0.1:9/bucket/{key}")
    info = RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    return ClientResponseError(info, (), status=status, message="Not Found")


@pytest.mark.parametrize("key", KEYS)
def test_401_inside_a_key_of_a_missing_object_is_not_a_refused_login(key):
    for exc in (FileNotFoundError(f"{key}: Not Found"), _aiohttp(404, key)):
        message = _message(exc)
        assert "refused the login" not in message and key in message, message
    assert "an object is missing" in _message(FileNotFoundError(f"{key}: Not Found"))


def test_a_status_401_is_a_refused_login():
    for exc in (_boto(401, "401"), _aiohttp(401, "runs/plain")):
        message = _message(exc)
        assert "refused the login" in message and "PIVOT_REMOTE_BOX_PASSWORD" in message
    # The same texts without their objects (an error rebuilt from the message).
    for exc in (_boto(401, "401"), _aiohttp(401, "runs/plain")):
        assert "refused the login" in _message(OSError(str(exc)))
    assert "refused the login" in _message(OSError("received 401 (Unauthorized)"))


def test_other_statuses_are_not_a_refused_login():
    for exc in (_boto(404, "404"), _boto(403, "AccessDenied"), _aiohttp(500, "runs/(401)")):
        assert "refused the login" not in _message(exc), str(exc)


@pytest.mark.parametrize("key", ["report(401).csv", "a,401,b"])
def test_missing_object_named_with_401_on_a_local_remote(tmp_path, key):
    remote = open_remote(str(tmp_path / "store(401)"), name="box")
    remote.put_bytes("packs/ab/present", b"x")
    with pytest.raises(PivotError) as info:
        remote.get_bytes(f"packs/ab/{key}")
    message = str(info.value)
    assert "an object is missing" in message and "refused the login" not in message, message
