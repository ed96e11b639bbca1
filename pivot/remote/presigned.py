"""A presigned GET URL of an S3 remote's identity object, kept in the state db, so that a
no-op push reads the identity with the standard library instead of importing boto3.

boto3 signs the URL (`generate_presigned_url`, no request) whenever a push has its client
anyway; this module records it with its expiry and later fetches it with `urllib`. The
recorded URL is untrusted: it is used only while unexpired, well formed, and addressed to
this remote's endpoint, bucket and identity key (path or virtual-hosted style). Any
failure (no URL, expired, refused, unreachable, not 200/206) returns None, and the caller
reads the object through boto3 as before.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from pivot.cache.state import StateDB
    from pivot.remote.stores import Remote, S3Objects

log = logging.getLogger(__name__)

NAMESPACE = "remote-identity-url"  # state db: "<expiry epoch s> <url>", by index tag
# SigV4's longest validity: a no-op push needs boto3 again only once a week (or sooner if
# the credentials that signed it expire or are revoked: the server then answers 403).
EXPIRES = 7 * 24 * 3600
MARGIN = 300  # seconds before the recorded expiry at which a URL counts as expired
TIMEOUT = 3.0
_MAX_URL = 8192
_RECORD = re.compile(rb"([0-9]{1,12}) ([\x21-\x7e]{1,8192})")
_AWS_HOST = re.compile(r"s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?")


def _s3(remote: Remote) -> S3Objects | None:
    from pivot.remote.stores import S3Objects

    return remote.store if isinstance(remote.store, S3Objects) else None


def remember(remote: Remote, state: StateDB, tag: str, key: str) -> None:
    """Record a fresh presigned GET URL of `key` for the S3 remote `tag`, if this push
    already made its boto3 client (nothing to do for other remotes or without a client)."""
    store = _s3(remote)
    if store is None or not store.s3.has_client:
        return
    try:
        url = store.s3.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": store.s3.bucket, "Key": store.full_key(key)},
            ExpiresIn=EXPIRES,
        )
    except Exception as exc:  # no credentials to sign with: later pushes use boto3
        log.debug(f"No presigned URL for {remote.display}: {exc}")
        state.delete(NAMESPACE, tag)
        return
    expiry = int(time.time()) + EXPIRES
    if len(url) <= _MAX_URL and url.isascii():
        state.put(NAMESPACE, tag, f"{expiry} {url}".encode("ascii"))


def read(remote: Remote, state: StateDB, tag: str, key: str, size: int) -> bytes | None:
    """At most `size` bytes of object `key` through the recorded URL, or None when there
    is no usable URL or the GET did not answer 200/206 with a body."""
    store = _s3(remote)
    if store is None:
        return None
    url = recorded(state, tag)
    if url is None or not addressed_to(url, store, key):
        return None
    try:
        return _get(url, size)
    except Exception as exc:
        log.debug(f"Presigned read of {remote.display} failed: {exc}")
        return None


def recorded(state: StateDB, tag: str, now: float | None = None) -> str | None:
    """The recorded URL if well formed and not (nearly) expired."""
    data = state.get(NAMESPACE, tag)
    found = _RECORD.fullmatch(data) if data is not None else None
    if found is None:
        return None
    if int(found[1]) - MARGIN <= (time.time() if now is None else now):
        return None
    return found[2].decode("ascii")


def addressed_to(url: str, store: S3Objects, key: str) -> bool:
    """Whether `url` reads this remote's object `key`: same scheme, host and port as its
    endpoint with the path /bucket/key, or the host bucket.endpoint-host with the path
    /key (no endpoint configured: an amazonaws.com S3 host over https)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return False
    if not parts.hostname or parts.fragment or "%2f" in parts.path.lower():
        return False
    bucket, full = store.s3.bucket, store.full_key(key)
    host, path = parts.hostname.lower(), unquote(parts.path)
    endpoint = _endpoint(store)
    if endpoint is None:
        if parts.scheme != "https" or port not in (None, 443):
            return False
        if host.startswith(f"{bucket}.") and _AWS_HOST.fullmatch(host[len(bucket) + 1 :]):
            return path == f"/{full}"
        return bool(_AWS_HOST.fullmatch(host)) and path == f"/{bucket}/{full}"
    try:
        want = urlsplit(endpoint)
        want_port = want.port or _default_port(want.scheme)
    except ValueError:
        return False
    if parts.scheme != want.scheme or (port or _default_port(parts.scheme)) != want_port:
        return False
    want_host = (want.hostname or "").lower()
    base = want.path.rstrip("/")
    if host == want_host:
        return path == f"{base}/{bucket}/{full}"
    return host == f"{bucket}.{want_host}" and path == f"{base}/{full}"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _endpoint(store: S3Objects) -> str | None:
    """The endpoint URL boto3's client uses, as configured (option, then environment)."""
    configured = store.s3.options.get("endpoint_url")
    if configured:
        return str(configured)
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _ca_bundle() -> str | None:
    """The CA file botocore verifies against by default: AWS_CA_BUNDLE, else certifi's,
    else the one botocore ships (found without importing botocore)."""
    if os.environ.get("AWS_CA_BUNDLE"):
        return os.environ["AWS_CA_BUNDLE"]
    try:
        import certifi

        return certifi.where()
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("botocore")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            if os.path.isfile(os.path.join(folder, "cacert.pem")):
                return os.path.join(folder, "cacert.pem")
    return None


def _get(url: str, size: int) -> bytes | None:
    """The first `size` bytes of a 200/206 answer to a GET of `url`, else None. Proxies
    from the environment (HTTP(S)_PROXY, NO_PROXY), as botocore; TLS verified against
    as botocore (`_ca_bundle`)."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=_ca_bundle())

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # a redirect is not an answer
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, headers={"Range": f"bytes=0-{size - 1}"})
    try:
        with opener.open(request, timeout=TIMEOUT) as response:
            if response.status not in (200, 206):
                return None
            data = response.read(size)
    except urllib.error.HTTPError as exc:
        exc.close()
        return None
    return data or None
