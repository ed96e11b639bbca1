"""Property-based fuzzing of the git tree parser `gc` uses to read branches: any bytes
give entries with whole object ids or a PivotError naming the tree; well-formed trees
(SHA-1 and SHA-256 ids) decode to exactly their entries."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivot.errors import PivotError
from pivot.services.reachable import _tree_entries

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b and b" " not in b)


@FUZZ
@given(data=st.binary(max_size=200), size=st.sampled_from([20, 32]))
def test_any_bytes_give_entries_or_an_error_naming_the_tree(data: bytes, size: int) -> None:
    try:
        entries = _tree_entries(data, size, "abc:.pivot/stages/")
    except PivotError as exc:
        assert "abc:.pivot/stages/" in str(exc)
        return
    assert all(len(oid) == 2 * size for _, _, oid in entries)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(st.sampled_from([b"100644", b"100755", b"40000", b"120000"]), names),
        max_size=6,
    ),
    size=st.sampled_from([20, 32]),
    seed=st.binary(min_size=32, max_size=32),
)
def test_well_formed_trees_decode_to_their_entries(rows, size: int, seed: bytes) -> None:
    raw = b"".join(mode + b" " + name + b"\0" + seed[:size] for mode, name in rows)
    entries = _tree_entries(raw, size, "t")
    assert [(m, n) for m, n, _ in entries] == [
        (m, n.decode("utf-8", "surrogateescape")) for m, n in rows
    ]
    assert {oid for _, _, oid in entries} <= {seed[:size].hex()}


def test_a_truncated_id_is_refused() -> None:
    with pytest.raises(PivotError, match="malformed"):
        _tree_entries(b"100644 a.lock\0" + b"x" * 19, 20, "t")
