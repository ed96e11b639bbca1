"""The options of a remote: which ones its backend accepts, and their values typed.

Every option but Pivot's own (`jobs`) is a storage option of the backend: a keyword of
its fsspec filesystem (and, where that filesystem hands its keywords on, of the library
underneath: asyncssh for sftp://, httpx for webdav://). Values arrive as text (the command
line, the environment); they are typed here by the default of the keyword they fill.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from pivot.errors import DefinitionError, MissingPackage
from pivot.urls import is_secret_option, redact_url, split_protocol

PIVOT_OPTIONS = frozenset({"jobs"})
S3_OPTIONS = frozenset(
    {"endpoint_url", "region", "profile", "access_key_id", "secret_access_key", "session_token"}
)
LOCAL_PROTOCOLS = ("file", "local")
WEBDAV_PROTOCOLS = ("webdav", "webdavs", "dav", "davs")
WEBDAV_OPTIONS = frozenset({"user", "password", "token"})  # Pivot's, turned into auth
# The extra of pivot that installs each protocol's package.
EXTRAS = {
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "sftp": "sftp",
    "ssh": "sftp",
    **dict.fromkeys(WEBDAV_PROTOCOLS, "webdav"),
    "s3": "s3",
    "s3a": "s3",
}
# The package of a protocol Pivot has no extra for.
_PACKAGES = {
    "http": '"fsspec[http]"',
    "https": '"fsspec[http]"',
    "hf": "huggingface_hub",
    "oss": "ossfs",
}
# Keywords that take objects, or that the url already gives: not settable as options.
_NOT_OPTIONS = frozenset(
    {
        "self",
        "host",
        "base_url",
        "loop",
        "asynchronous",
        "client",
        "pool_type",
        "request_session",
        "session_kwargs",
        "sftp_client_kwargs",
        "skip_instance_cache",
        "tunnel",
        "sock",
        "options",
        "transport",
        "mounts",
        "event_hooks",
        "auth",
    }
)
# What fsspec's AbstractFileSystem takes through **storage_options (its listings cache).
_LISTING_OPTIONS = {"use_listings_cache": False, "listings_expiry_time": None, "max_paths": None}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def fs_protocol(protocol: str) -> str:
    """The fsspec protocol a Pivot url protocol opens (webdavs:// is webdav over https)."""
    return "webdav" if protocol in WEBDAV_PROTOCOLS else protocol


def missing_package(protocol: str, display: str) -> MissingPackage:
    """The error for a remote whose protocol's package is not installed."""
    extra = EXTRAS.get(protocol)
    if extra is not None:
        how = f"Install it with `pip install 'pivot[{extra}]'`."
    elif protocol in _PACKAGES:
        how = f"Install it with `pip install {_PACKAGES[protocol]}`."
    else:
        from fsspec.registry import known_implementations

        err = known_implementations.get(protocol, {}).get("err") or ""
        how = f"Install it ({err.rstrip('.')})." if err else "Install fsspec's one for it."
    return MissingPackage(
        f"The remote {display} uses the {protocol}:// protocol, whose package is not "
        f"installed. {how}",
        package=f"pivot[{extra}]" if extra else protocol,
    )


def fs_class(protocol: str, display: str) -> Any:
    """The fsspec filesystem class of `protocol`, or an error naming what to install."""
    import fsspec

    try:
        return fsspec.get_filesystem_class(fs_protocol(protocol))
    except ImportError:
        raise missing_package(protocol, display) from None
    except ValueError:
        raise DefinitionError(
            f"The remote {display} uses the unknown protocol {protocol}://. Use s3://, a "
            f"local path, memory://, or another protocol that fsspec knows."
        ) from None


def _keywords(func: Any) -> tuple[dict[str, Any], bool]:
    """The keyword parameters of `func` with their defaults (inspect.Parameter.empty when
    none), and whether it takes **kwargs."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return {}, True
    named = {
        p.name: p.default
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _NOT_OPTIONS
    }
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


@functools.cache
def backend_options(protocol: str) -> dict[str, Any]:
    """Every storage option the backend of `protocol` (installed) accepts, with its
    default: the keywords of its filesystem's __init__ down the class chain while each
    hands **kwargs on, and those of the library it hands them to."""
    import fsspec

    cls = fsspec.get_filesystem_class(fs_protocol(protocol))
    found: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        named, forwards = _keywords(klass.__init__)
        found = {**named, **found}
        if klass.__name__ == "AbstractFileSystem":
            found = {**_LISTING_OPTIONS, **found}
        if not forwards:
            break
    if protocol in ("sftp", "ssh"):
        import asyncssh

        for func in (asyncssh.connect, asyncssh.SSHClientConnectionOptions.prepare):
            found = {**_keywords(func)[0], **found}
        found.pop("max_sessions", None)
        found["max_sessions"] = 10
    if protocol in WEBDAV_PROTOCOLS:
        import httpx

        found = {**_keywords(httpx.Client.__init__)[0], **found}
        found.update(dict.fromkeys(WEBDAV_OPTIONS))
    return found


def known_options(protocol: str) -> list[str]:
    """The options a remote with `protocol` accepts (Pivot's and its backend's)."""
    if protocol in LOCAL_PROTOCOLS or protocol == "memory":
        return sorted(PIVOT_OPTIONS)
    if protocol in ("s3", "s3a"):
        return sorted(PIVOT_OPTIONS | S3_OPTIONS)
    return sorted(PIVOT_OPTIONS | set(backend_options(protocol)))


def typed(protocol: str, key: str, value: Any) -> Any:
    """`value` of option `key` as the backend takes it: text read as the type of the
    keyword's default (int, float, bool); a secret stays text; None for `none`/`null`
    where the default is None (asyncssh's `known_hosts none` turns checking off)."""
    if not isinstance(value, str) or is_secret_option(key):
        return value
    if key in PIVOT_OPTIONS or protocol in ("s3", "s3a", "memory", *LOCAL_PROTOCOLS):
        return value
    default = backend_options(protocol).get(key)
    text = value.strip().lower()
    if isinstance(default, bool):
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError("true or false")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if text in ("none", "null") and not isinstance(default, str):
        return None
    if default is None or default is inspect.Parameter.empty:
        if text in ("true", "false"):
            return text == "true"
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def check_option(url: str, name: str, key: str, value: Any) -> Any:
    """Refuse option `key` of remote `name` at `url` unless its backend accepts it with
    this value; returns the value typed."""
    protocol = split_protocol(url)[0]
    display = f"{name!r} ({redact_url(url)})"
    if protocol not in ("s3", "s3a", "memory", *LOCAL_PROTOCOLS):
        fs_class(protocol, display)  # a missing package is named first
    known = known_options(protocol)
    if key not in known:
        backend = {
            "s3": "S3",
            "s3a": "S3",
            "memory": "memory://",
            **dict.fromkeys(LOCAL_PROTOCOLS, "a local folder"),
        }.get(protocol, f"the {protocol}:// filesystem")
        raise DefinitionError(
            f"Unknown option {key!r} for remote {display}: {backend} accepts "
            f"{', '.join(known)}. Check the spelling against this list (and the url's "
            f"protocol).",
            remote=name,
        )
    try:
        return typed(protocol, key, value)
    except ValueError as exc:
        expected = str(exc) if "true" in str(exc) else "a number"
        raise DefinitionError(
            f"Option {key} of remote {display} must be {expected}, not {value!r}.",
            remote=name,
        ) from None
