"""Checks for numbers decoded from untrusted bytes (lock files, tree manifests, run
records, remote and local pack indexes): a size, offset or length is a non-negative int,
never a float, a bool, a string or an unbounded value Python would happily convert: it
must fit the signed 64-bit integers msgpack and SQLite hold."""

from __future__ import annotations

LIMIT = 2**63


def count(value: object) -> int:
    """`value` if it is a non-negative integer below 2**63, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < LIMIT:
        raise ValueError(f"{value!r} is not a non-negative integer below 2**63")
    return value
