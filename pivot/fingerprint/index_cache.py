"""The disk cache of source-file indexes, so that a new process parses no unchanged file.

One marshal file per source file under `<root>/.pivot/tmp/fingerprint/`, named after the
source's path and checked against its content digest and the Python version.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import threading

import blake3

from pivot.fingerprint.normal_ast import Binding, Const, Entry, Import

# Bump when the record layout or the normalisation changes: old files are then ignored.
FORMAT = 2
CACHE_SUBDIR = (".pivot", "tmp", "fingerprint")
PY_TAG = f"{sys.implementation.cache_tag}-{'.'.join(map(str, sys.version_info[:3]))}"


def cache_file(cache_dir: str, path: str) -> str:
    """The cache file of the source file `path`."""
    return os.path.join(cache_dir, blake3.blake3(path.encode()).hexdigest()[:32] + ".idx")


def load(cache_dir: str, path: str, digest: str) -> tuple[list[Entry], list[Binding]] | None:
    """The stored index of `path` if its file holds one for content `digest`, else None."""
    try:
        with open(cache_file(cache_dir, path), "rb") as fh:
            record = marshal.loads(fh.read())
        fmt, tag, stored_digest, entries, bindings = record
        if fmt != FORMAT or tag != PY_TAG or stored_digest != digest:
            return None
        return (
            [Entry(*e[:8], tuple(Import(*i) for i in e[8])) for e in entries],
            [Import(*b[1:]) if b[0] == "import" else Const(*b[1:]) for b in bindings],
        )
    except Exception:  # absent, unreadable or corrupt: recompute
        return None


def store(
    cache_dir: str, path: str, digest: str, entries: list[Entry], bindings: list[Binding]
) -> None:
    """Write the index of `path` (atomically; a project that cannot be written is only slower)."""
    target = cache_file(cache_dir, path)
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
    plain_entries = tuple((*e[:8], tuple(tuple(i) for i in e.imports)) for e in entries)
    plain_bindings = tuple(("import" if type(b) is Import else "const", *b) for b in bindings)
    try:
        data = marshal.dumps((FORMAT, PY_TAG, digest, plain_entries, plain_bindings))
        os.makedirs(cache_dir, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except (OSError, ValueError):  # a read-only project still works, only slower
        with contextlib.suppress(OSError):
            os.unlink(tmp)
