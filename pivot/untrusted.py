"""Checks for numbers decoded from untrusted bytes (lock files, tree manifests, run
records, remote and local pack indexes): a size, offset or length is a non-negative int,
never a float, a bool, a string or an unbounded value Python would happily convert."""

from __future__ import annotations


def count(value: object) -> int:
    """`value` if it is a non-negative integer, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value
