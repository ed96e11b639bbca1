"""Property-based fuzzing of the remote-held memo's entry decoder: any bytes give a
well-formed entry or ValueError (which the push treats as no entry)."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivot.cache.hashing import is_hash
from pivot.remote.held import decode_entry, encode_entry

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=40)
)
anything = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3), max_leaves=8)
shaped = st.tuples(
    st.sampled_from([0, 3, -1, 2**63, 1.5, True]) | anything,
    st.lists(st.binary(min_size=31, max_size=33) | anything, max_size=3),
)


def _check(data: bytes) -> None:
    try:
        blobs, ids = decode_entry(data)
    except ValueError:
        return
    assert isinstance(blobs, int) and not isinstance(blobs, bool) and 0 <= blobs < 2**63
    assert ids and all(is_hash(i) for i in ids)


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_value_error(data):
    _check(data)


@FUZZ
@given(shaped | anything)
def test_any_msgpack_value_decodes_or_raises_value_error(value):
    _check(msgpack.packb(list(value) if isinstance(value, tuple) else value, use_bin_type=True))


@FUZZ
@given(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.sets(st.binary(min_size=32, max_size=32), min_size=1, max_size=4),
)
def test_entries_round_trip(blobs, raw_ids):
    ids = {i.hex() for i in raw_ids}
    assert decode_entry(encode_entry(blobs, ids)) == (blobs, frozenset(ids))
