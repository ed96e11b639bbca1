"""Property-based fuzzing of the tracked-data record decoder: any text gives a valid
record for the path its location names, or a PivotError naming the record file."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pivot.cache.hashing import DIR, FILE, is_hash
from pivot.cache.tracked import decode
from pivot.errors import PivotError
from pivot.project import safe_relpath

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HASH = "ab" * 32
FILE_NAME = ".pivot/tracked/data/raw.csv.json"

leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
anything = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
shaped = st.fixed_dictionaries(
    {
        "schema": st.sampled_from([1, 2, "1", True]) | anything,
        "path": st.sampled_from(["data/raw.csv", "../x", ".git/config", ""]) | anything,
        "hash": st.sampled_from([HASH, "AB" * 32, ""]) | anything,
        "size": st.sampled_from([0, 4, -1, 2**63, 1.5, True]) | anything,
        "kind": st.sampled_from([FILE, DIR, "link"]) | anything,
    },
    optional={"extra": anything},
)
locations = st.sampled_from(["data/raw.csv", "../up", ".git/hooks/x", "a//b", ".pivot/x"])


def _decode_or_error(text: str, path: str) -> None:
    try:
        record = decode(text, path, FILE_NAME)
    except PivotError as exc:
        assert FILE_NAME in str(exc)
        return
    assert record.path == path
    safe_relpath(record.path, "a decoded tracked path")
    assert is_hash(record.hash) and record.kind in (FILE, DIR)
    assert isinstance(record.size, int) and not isinstance(record.size, bool)
    assert 0 <= record.size < 2**63


@FUZZ
@given(shaped, locations)
@example({"schema": 1, "path": "../up", "hash": HASH, "size": 1, "kind": FILE}, "../up")
def test_shaped_records(body: dict, path: str) -> None:
    _decode_or_error(json.dumps(body), path)


@FUZZ
@given(st.text(max_size=200), locations)
@example("[" * 100_000, "data/raw.csv")
@example('{"schema": 1, "size": Infinity}', "data/raw.csv")
def test_any_text(text: str, path: str) -> None:
    _decode_or_error(text, path)
