"""The disk cache of source-file indexes, so that a new process parses no unchanged file.

One JSON file per source file under `<root>/.pivot/tmp/fingerprint/`, named after the
source's path and checked against its content digest and the Python version. The folder
can be damaged or committed by anyone, so `decode` accepts only a record of the exact shape
`encode` writes and returns None for any other bytes: the caller then parses the source and
writes the file anew.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
from typing import Any

import blake3

from pivot._fs import read_own_file, write_bytes
from pivot.errors import DiskFull
from pivot.fingerprint.normal_ast import Binding, Const, Entry, Import

# Bump when the record layout or the normalisation changes: old files are then rewritten.
FORMAT = 3
CACHE_SUBDIR = (".pivot", "tmp", "fingerprint")
PY_TAG = f"{sys.implementation.cache_tag}-{'.'.join(map(str, sys.version_info[:3]))}"
# Python's parser stops at 200 nested brackets, so no literal of a source file nests deeper.
_MAX_NESTING = 256
_MAX_BYTES = 256 << 20  # an index is a fraction of its source file's size


class _Invalid(Exception):
    """The record is not one that `encode` writes."""


def cache_file(cache_dir: str, path: str) -> str:
    """The cache file of the source file `path`."""
    return os.path.join(cache_dir, blake3.blake3(path.encode()).hexdigest()[:32] + ".idx")


def load(cache_dir: str, path: str, digest: str) -> tuple[list[Entry], list[Binding]] | None:
    """The stored index of `path` if its file holds one for content `digest`, else None."""
    data = read_own_file(cache_file(cache_dir, path), _MAX_BYTES)
    return None if data is None else decode(data, digest)


def store(
    cache_dir: str, path: str, digest: str, entries: list[Entry], bindings: list[Binding]
) -> None:
    """Write the index of `path` (atomically; a project that cannot be written is only slower)."""
    with contextlib.suppress(OSError, ValueError, RecursionError, DiskFull):
        data = encode(digest, entries, bindings)
        write_bytes(pathlib.Path(cache_file(cache_dir, path)), data, sync=False)


# --- encoding ---------------------------------------------------------------------------


def encode(digest: str, entries: list[Entry], bindings: list[Binding]) -> bytes:
    """The record of one source file's index: ASCII JSON."""
    out_bindings: list[list[Any]] = []
    for b in bindings:
        if type(b) is Import:
            out_bindings.append(["import", *b])
        else:
            out_bindings.append(
                ["const", b.name, b.digest, b.is_literal, _literal(b.literal), b.refs]
            )
    record = {
        "format": FORMAT,
        "python": PY_TAG,
        "digest": digest,
        "entries": [list(e) for e in entries],
        "bindings": out_bindings,
    }
    return json.dumps(record, separators=(",", ":")).encode("ascii")


def _literal(v: Any) -> Any:
    """A value of `ast.literal_eval` as JSON: scalars as they are, the rest as one-key tags."""
    kind = type(v)
    if v is None or kind is bool or kind is int or kind is float or kind is str:
        return v
    if kind is tuple or kind is list or kind is set:
        return {kind.__name__: [_literal(x) for x in v]}
    if kind is dict:
        return {"dict": [[_literal(k), _literal(x)] for k, x in v.items()]}
    if kind is bytes:
        return {"bytes": v.hex()}
    if kind is complex:
        return {"complex": [v.real, v.imag]}
    if v is Ellipsis:
        return {"ellipsis": None}
    raise ValueError(f"not a literal: {kind.__name__}")


# --- decoding: any bytes in, a valid index or None out ----------------------------------


def decode(data: bytes, digest: str) -> tuple[list[Entry], list[Binding]] | None:
    """The index in `data` when it is a current record for source content `digest`, else None.

    Safe on any bytes: nothing but JSON parsing and type checks runs on them.
    """
    try:
        record = json.loads(data)
        if (
            type(record) is not dict
            or record.keys() != {"format", "python", "digest", "entries", "bindings"}
            or record["format"] != FORMAT
            or record["python"] != PY_TAG
            or record["digest"] != digest
        ):
            return None
        entries = [_entry(e) for e in _list(record["entries"])]
        bindings = [_binding(b) for b in _list(record["bindings"])]
    except (ValueError, TypeError, RecursionError, _Invalid):
        # ValueError covers undecodable bytes and bad JSON; TypeError an unhashable key.
        return None
    return entries, bindings


def _list(v: Any, size: int | None = None) -> list[Any]:
    if type(v) is not list or (size is not None and len(v) != size):
        raise _Invalid
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Invalid
    return v


def _int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise _Invalid
    return v


def _strs(v: Any) -> tuple[str, ...]:
    if type(v) is not list or not set(map(type, v)) <= _STR:
        raise _Invalid
    return tuple(v)


def _ints(v: Any) -> tuple[int, ...]:
    if type(v) is not list or not set(map(type, v)) <= _INT or (v and min(v) < 0):
        raise _Invalid
    return tuple(v)


_STR, _INT = frozenset({str}), frozenset({int})


def _import(v: Any) -> Import:
    name, module, attr, level = _list(v, 4)
    return Import(_str(name), _str(module), _str(attr), _int(level))


def _entry(v: Any) -> Entry:
    # The checks of _str / _int / _list inlined: a pipeline file of many stages has as many
    # entries, and every one is checked on every read.
    kind, match, qualname, digest, header, body, lines, col, imports = _list(v, 9)
    if (
        kind not in ("func", "class")
        or type(match) is not str
        or type(qualname) is not str
        or type(digest) is not str
        or type(col) is not int
        or col < 0
        or type(imports) is not list
        or not lines
    ):
        raise _Invalid
    return Entry(
        kind,
        match,
        qualname,
        digest,
        _strs(header),
        _strs(body),
        _ints(lines),
        col,
        tuple(map(_import, imports)) if imports else (),
    )


def _binding(v: Any) -> Binding:
    kind = _list(v)[0] if v else None
    if kind == "import":
        return _import(v[1:])
    if kind != "const":
        raise _Invalid
    _, name, digest, is_literal, literal, refs = _list(v, 6)
    if type(is_literal) is not bool:
        raise _Invalid
    value = _from_literal(literal, 0) if is_literal else None
    return Const(_str(name), _str(digest), is_literal, value, _strs(refs))


def _from_literal(v: Any, depth: int) -> Any:
    if depth > _MAX_NESTING:
        raise _Invalid
    kind = type(v)
    if v is None or kind is bool or kind is int or kind is float or kind is str:
        return v
    if kind is not dict or len(v) != 1:
        raise _Invalid
    ((tag, body),) = v.items()
    if tag in ("tuple", "list", "set"):
        items = [_from_literal(x, depth + 1) for x in _list(body)]
        return tuple(items) if tag == "tuple" else items if tag == "list" else set(items)
    if tag == "dict":
        pairs = [_list(p, 2) for p in _list(body)]
        return {_from_literal(k, depth + 1): _from_literal(x, depth + 1) for k, x in pairs}
    if tag == "bytes":
        return bytes.fromhex(_str(body))
    if tag == "complex":
        real, imag = _list(body, 2)
        if type(real) is not float or type(imag) is not float:
            raise _Invalid
        return complex(real, imag)
    if tag == "ellipsis" and body is None:
        return Ellipsis
    raise _Invalid
