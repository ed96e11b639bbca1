"""A remote's identity: a small object holding a random id, written by the first push that
finds none, and the id as this machine last saw it (in the state db).

The cached indexes and the memo of what a remote holds (`held`) let a push with nothing to
send answer without listing the remote. They describe the remote as it was; a remote
emptied by hand (a folder deleted, a bucket's objects removed) or replaced by another at
the same url loses or changes its identity object. So a no-op push reads that object once
(one small ranged GET), and trusts the cached knowledge only while the id read is the one
recorded when it was last listed; otherwise it lists the remote and checks in full.

Both copies are untrusted: the object is read with a bounded range and decoded strictly
(exact length, prefix and lowercase hex); the recorded id is decoded the same way. Anything
else counts as no id: the push checks in full and writes a fresh identity.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import TYPE_CHECKING

from pivot.errors import RemoteError
from pivot.remote import presigned

if TYPE_CHECKING:
    from pivot.cache.state import StateDB
    from pivot.remote.stores import Remote

log = logging.getLogger(__name__)

KEY = "pivot-remote-id"  # the object's key at the remote's root
PREFIX = b"pivot remote id 1\n"
SIZE = len(PREFIX) + 33  # 32 hex digits and a newline
NAMESPACE = "remote-identity"  # state db: the id last seen, by the remote's index tag
_ID = re.compile(rb"[0-9a-f]{32}\n")


def decode(data: bytes) -> str | None:
    """The id an identity object holds, or None unless it is exactly one."""
    if len(data) != SIZE or not data.startswith(PREFIX):
        return None
    body = data[len(PREFIX) :]
    return body[:32].decode("ascii") if _ID.fullmatch(body) else None


def encode(ident: str) -> bytes:
    return PREFIX + ident.encode("ascii") + b"\n"


def read(remote: Remote, state: StateDB | None = None, tag: str = "") -> str | None:
    """The remote's id (one request of at most SIZE + 1 bytes), or None when it has none,
    a damaged one, or no folder or bucket at all (the full check that follows reports
    that). Any other failure to reach it is raised.

    With the state db: on S3, first through the recorded presigned URL (`presigned`, no
    boto3 import); when that is not usable, through the client, and a fresh URL is
    recorded for the next read."""
    if state is not None:
        data = presigned.read(remote, state, tag, KEY, SIZE + 1)
        if data is not None:
            return decode(data)
    data = remote.get_head(KEY, SIZE + 1)
    if state is not None:
        presigned.remember(remote, state, tag, KEY)
    return None if data is None else decode(data)


def create(remote: Remote) -> str | None:
    """Write a fresh identity object; its id, or None if the remote refused the write (a
    push that only checked a read-only remote still succeeds; the next one checks in full
    again)."""
    ident = secrets.token_hex(16)
    try:
        remote.put_bytes(KEY, encode(ident))
    except RemoteError as exc:
        log.debug(f"No identity written to {remote.display}: {exc}")
        return None
    return ident


def recorded(state: StateDB, tag: str) -> str | None:
    """The id this machine saw when it last listed the remote `tag`, if well formed."""
    data = state.get(NAMESPACE, tag)
    return decode(PREFIX + data) if data is not None else None


def record(state: StateDB, tag: str, ident: str | None) -> None:
    """Remember `ident` as the id under which the remote `tag` was listed (None: forget)."""
    if ident is None:
        state.delete(NAMESPACE, tag)
    else:
        state.put(NAMESPACE, tag, encode(ident)[len(PREFIX) :])
