"""Run records, the action cache: run key -> the outputs that run produced.

A record is a small msgpack file under `.pivot/cache/runs/`; a stage whose run key has a
record (locally or on a remote) is restored from the cache instead of being run."""

from __future__ import annotations

import pathlib
from typing import Any, Protocol

import msgpack

from pivot import _fs
from pivot.cache.hashing import DIR, FILE, is_hash
from pivot.errors import CorruptFile, PivotError
from pivot.project import safe_relpath
from pivot.untrusted import count

RECORD_VERSION = 1
# No record can be read there: none, or something other than Pivot stands in the way (a
# file where its folder goes, a folder where it goes), which recording it then reports.
_ABSENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class Produced(Protocol):
    """What a stage last produced: its id, run key and outputs (a lock file is one)."""

    @property
    def stage_id(self) -> str: ...

    @property
    def run_key(self) -> str: ...

    @property
    def outs(self) -> dict[str, dict[str, Any]]: ...


class RunRecords:
    """Run records stored as msgpack files under `.pivot/cache/runs/ab/cdef…`; every read
    validates the record, and a damaged one reads as absent."""

    def __init__(self, cache_dir: pathlib.Path) -> None:
        self.root = cache_dir / "runs"

    def path(self, run_key: str) -> pathlib.Path:
        if not is_hash(run_key):
            raise CorruptFile(f"Refusing an invalid run key {run_key!r}.")
        return self.root / run_key[:2] / run_key[2:]

    def has(self, run_key: str) -> bool:
        return self.path(run_key).is_file()

    def get(self, run_key: str) -> dict[str, dict] | None:
        """The outputs recorded for `run_key`, or None (also when unreadable)."""
        try:
            data = self.path(run_key).read_bytes()
        except _ABSENT:
            return None
        try:
            return decode_record(data, f"run record {run_key[:12]}")
        except PivotError:
            return None

    def get_bytes(self, run_key: str) -> bytes | None:
        """The encoded record for `run_key`, or None (also when it does not decode)."""
        try:
            data = self.path(run_key).read_bytes()
            decode_record(data, f"run record {run_key[:12]}")
        except (*_ABSENT, PivotError):
            return None
        return data

    def put(self, run_key: str, outs: dict[str, dict]) -> None:
        _fs.write_bytes(self.path(run_key), encode_record(outs))

    def put_bytes(self, run_key: str, data: bytes, what: str) -> None:
        """Store a record received from elsewhere, after validating it."""
        decode_record(data, what)
        _fs.write_bytes(self.path(run_key), data)

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [
            shard.name + entry.name
            for shard in self.root.iterdir()
            if shard.is_dir() and not shard.is_symlink()  # gc deletes what is listed
            for entry in shard.iterdir()
            if is_hash(shard.name + entry.name)
        ]


def encode_record(outs: dict[str, dict]) -> bytes:
    rows = {path: [o["hash"], o["size"], o["kind"]] for path, o in sorted(outs.items())}
    return msgpack.packb({"v": RECORD_VERSION, "outs": rows}, use_bin_type=True)


def decode_record(data: bytes, what: str) -> dict[str, dict]:
    """Parse and validate a run record; paths must stay inside the project."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        if raw.get("v") != RECORD_VERSION:
            raise ValueError(f"unknown version {raw.get('v')!r}")
        outs = {
            str(path): {"hash": str(h), "size": count(size), "kind": str(kind)}
            for path, (h, size, kind) in raw["outs"].items()
        }
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise CorruptFile(f"The {what} is corrupt ({exc}).", path=what) from exc
    for path, out in outs.items():
        safe_relpath(path, f"an output path in the {what}")
        if not is_hash(out["hash"]) or out["kind"] not in (FILE, DIR):
            raise CorruptFile(f"The {what} holds an invalid output entry for {path}.", path=what)
    return outs
