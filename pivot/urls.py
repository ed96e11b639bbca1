"""Remote URLs: their protocol, the credentials they may hold, and how to show them.

A URL is configuration a user may paste secrets into; these helpers find the secrets (to
refuse them in the committed config), hide them in every message, and read an s3:// URL
as exactly a bucket and a key prefix.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from pivot.errors import DefinitionError

_SECRET_KEY = re.compile(r"(key|secret|token|sig|password|passwd|credential)", re.IGNORECASE)
_SCHEME = r"^[A-Za-z][A-Za-z0-9+.-]*://"
# scheme://user:password@ (the password may hold a '/', up to the '@'), or scheme://user@.
_USER_PASSWORD = re.compile(_SCHEME + r"([^/@?#:]*):([^@?#]*)@")
_USER_ONLY = re.compile(_SCHEME + r"([^/@?#:]+)@")
_PATH_PARAM = re.compile(r";([^/;=]*)(?:=([^/;]*))?")
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")  # what botocore accepts (ARNs aside)
# The name of a remote option whose value is a secret (password, account_key, sas_token,
# client_secret, connection_string, credential, access_key_id, ...).
_SECRET_OPTION = re.compile(
    r"(key|secret|token|password|passwd|credential|connection_string)", re.IGNORECASE
)
# scheme://user:password@ anywhere in a text (no whitespace or '/' in either part).
_TEXT_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@")


def _userinfo_span(url: str) -> tuple[int, int] | None:
    """Where the user part of `url` (`user@` or `user:password@`, without the `@`) is."""
    match = _USER_PASSWORD.match(url) or _USER_ONLY.match(url)
    return (match.start(1), match.end(match.lastindex or 1)) if match else None


def _parts(url: str) -> tuple[str, str, str]:
    """The path, query and fragment of `url` (split by hand if it does not parse)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        rest, _, fragment = url.partition("#")
        path, _, query = rest.partition("?")
        return path, query, fragment
    return parts.path, parts.query, parts.fragment


def _pairs(text: str) -> list[tuple[str, str]]:
    """The `key=value` pairs (a bare word is a key) of a query or fragment, split on `&`
    and `;`; keys %-decoded."""
    return [
        (unquote(key), value)
        for part in re.split(r"[&;]", text)
        if part
        for key, _, value in [part.partition("=")]
    ]


def _secret_pairs(url: str) -> list[tuple[str, str, str]]:
    """(where, key, value) of each secret-looking key in the query, the fragment and the
    `;key=value` parameters of the path."""
    path, query, fragment = _parts(url)
    found = [("query key", k, v) for k, v in _pairs(query) if _SECRET_KEY.search(k)]
    found += [("fragment key", k, v) for k, v in _pairs(fragment) if _SECRET_KEY.search(k)]
    for match in _PATH_PARAM.finditer(path):
        key, value = unquote(match.group(1)), match.group(2) or ""
        if _SECRET_KEY.search(key):
            found.append(("path parameter", key, value))
    return found


def url_credentials(url: str) -> list[str]:
    """What in `url` is a credential: a user part (`user@`, a token may be a user name, or
    `user:password@`), and the keys that name a secret in the query, the fragment or the
    path parameters (`?secret_access_key=...`, `#token=...`, `;password=...`)."""
    found = ["a user name or password (`user@`)"] if _userinfo_span(url) else []
    return found + [f"the {where} {key!r}" for where, key, _ in _secret_pairs(url)]


def url_secret_values(url: str) -> tuple[str, ...]:
    """The secret strings in `url`, to hide wherever a library's error text repeats them."""
    span = _userinfo_span(url)
    values = [url[span[0] : span[1]]] if span else []
    if span and ":" in values[0]:
        values += values[0].split(":", 1)
    values += [value for _, _, value in _secret_pairs(url)]
    return tuple(v for v in values if v)


ENV_PREFIX = "PIVOT_REMOTE_"


def env_name(name: str) -> str:
    """The prefix of the environment variables that set options of remote `name`:
    `PIVOT_REMOTE_<NAME>_` (upper case, '.' and '-' as '_')."""
    return f"{ENV_PREFIX}{re.sub(r'[.-]', '_', name).upper()}_"


def is_secret_option(key: str) -> bool:
    """Whether remote option `key` holds a secret: kept out of the committed config and
    shown as `***`."""
    return bool(_SECRET_OPTION.search(key))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` (a library's error message) with secrets hidden by structure: the user part
    of every `scheme://user:password@` in it (as `redact_url` shows it), and each of
    `secrets` where it stands
    as a whole token (not inside a longer word: the password `p` leaves `packs` alone)."""
    text = _TEXT_USERINFO.sub(r"\1***@", text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        token = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(secret)}(?![A-Za-z0-9_])")
        text = token.sub("***", text)
    return text


def redact_url(url: str) -> str:
    """`url` for a message: its user part, every query value, its fragment and the values
    of its path parameters hidden."""
    span = _userinfo_span(url)
    if span:
        url = f"{url[: span[0]]}***{url[span[1] :]}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc and not span:
        netloc = f"***@{netloc.rsplit('@', 1)[1]}"
    path = _PATH_PARAM.sub(lambda m: f";{m.group(1)}=***", parts.path)
    query = parts.query
    if query:
        query = "&".join(f"{k}=***" for k, _ in parse_qsl(query, keep_blank_values=True))
        query = query or "***"
    fragment = "***" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


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
    if "@" in rest.partition("/")[0] or _userinfo_span(url):
        raise DefinitionError(
            f"The url of remote {display} holds a user name or password: an {protocol}:// url "
            f"takes none.",
            remote=name,
            hint="s3-credentials",
        )
    if "?" in rest or "#" in rest:
        raise DefinitionError(
            f"The url of remote {display} holds a query or fragment (`?...` / `#...`): an "
            f"{protocol}:// url is s3://BUCKET/PREFIX only.",
            remote=name,
            hint="s3-options",
        )
    root = rest.strip("/")
    if not root:
        raise DefinitionError(
            f"The remote {display} names no bucket: use s3://BUCKET/PREFIX.", remote=name
        )
    bucket, _, prefix = root.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise DefinitionError(
            f"The remote {display} names the bucket {bucket!r}, which is not a valid bucket "
            f"name (letters, digits, '.', '-', '_').",
            remote=name,
            hint="fix-bucket",
        )
    return bucket, prefix.strip("/")


def split_protocol(url: str) -> tuple[str, str]:
    """(protocol, the rest) of `url`; a plain path is a `file` url."""
    if "://" in url:
        protocol, rest = url.split("://", 1)
        return protocol.lower(), rest
    return "file", url
