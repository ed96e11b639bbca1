"""Remote URLs: their protocol, the credentials they may hold, and how to show them.

A URL is configuration a user may paste secrets into; these helpers find the secrets (to
refuse them in the committed config), hide them in every message, and read an s3:// URL
as exactly a bucket and a key prefix.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pivot.errors import PivotError

_SECRET_QUERY = re.compile(r"(key|secret|token|sig|password|passwd|credential)", re.IGNORECASE)
# scheme://user:password@ (group 2 the password, which may hold a '/', up to the '@').
_USER_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/@?#:]*):([^@?#]*)@")
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")  # what botocore accepts (ARNs aside)


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password of a `user:password@` part of `url` is, if it has one.

    The password may hold a `/` (AWS secret keys do): it runs to the `@`.
    """
    match = _USER_PASSWORD.match(url)
    return match.span(2) if match else None


def url_credentials(url: str) -> list[str]:
    """What in `url` is a credential: a `user:password@` part, and the query keys that
    name a secret (`?secret_access_key=...`, `?sig=...`)."""
    found = ["a user:password@ part"] if _password_span(url) else []
    try:
        query = urlsplit(url).query
    except ValueError:
        query = url.partition("?")[2]
    keys = [k for k, _ in parse_qsl(query, keep_blank_values=True) if _SECRET_QUERY.search(k)]
    found += [f"the query key {key!r}" for key in keys]
    return found


def url_secret_values(url: str) -> tuple[str, ...]:
    """The secret strings in `url`, to hide wherever a library's error text repeats them."""
    span = _password_span(url)
    values = [url[span[0] : span[1]]] if span else []
    with contextlib.suppress(ValueError):
        pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
        values += [v for k, v in pairs if _SECRET_QUERY.search(k)]
    return tuple(v for v in values if v)


def redact_url(url: str) -> str:
    """`url` for a message: the password of its user part and every query value hidden."""
    span = _password_span(url)
    if span:
        url = f"{url[: span[0]]}***{url[span[1] :]}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc and not span:
        netloc = f"***@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}=***" for k, _ in pairs) or "***"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_url(url: str, name: str) -> None:
    """Refuse the url of remote `name` if its form alone makes it unusable."""
    if split_protocol(url)[0] in ("s3", "s3a"):
        s3_location(url, name)


def s3_location(url: str, name: str) -> tuple[str, str]:
    """The bucket and key prefix of the s3:// url of remote `name`.

    Such a url holds no query, fragment or `user:password@`: S3 takes none, so Pivot would
    otherwise read them as part of the bucket or the key prefix.
    """
    protocol, rest = split_protocol(url)
    display = f"{name!r} ({redact_url(url)})"
    if "@" in rest.partition("/")[0] or _password_span(url):
        raise PivotError(
            f"The url of remote {display} holds a user name or password: an {protocol}:// url "
            f"takes none. Use an AWS profile (`pivot remote modify {name} profile NAME`), the "
            f"environment variables AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or `pivot "
            f"remote modify --local {name} access_key_id ...` and `secret_access_key ...`."
        )
    if "?" in rest or "#" in rest:
        raise PivotError(
            f"The url of remote {display} holds a query or fragment (`?...` / `#...`): an "
            f"{protocol}:// url is s3://BUCKET/PREFIX only. Set options with `pivot remote "
            f"modify {name} KEY VALUE` (endpoint_url, region, profile; credentials with "
            f"--local) and remove the query from the url."
        )
    root = rest.strip("/")
    if not root:
        raise PivotError(f"The remote {display} names no bucket: use s3://BUCKET/PREFIX.")
    bucket, _, prefix = root.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise PivotError(
            f"The remote {display} names the bucket {bucket!r}, which is not a valid bucket "
            f"name (letters, digits, '.', '-', '_'). Fix the url with `pivot remote modify "
            f"{name} url s3://BUCKET/PREFIX`."
        )
    return bucket, prefix.strip("/")


def split_protocol(url: str) -> tuple[str, str]:
    """(protocol, the rest) of `url`; a plain path is a `file` url."""
    if "://" in url:
        protocol, rest = url.split("://", 1)
        return protocol.lower(), rest
    return "file", url
