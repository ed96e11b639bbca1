"""Property-based fuzzing of the remote identity object's decoder (remote/identity.py):
any bytes, on the remote or in the state db, give one well-formed id or None (which the
push treats as no identity: it lists the remote and checks in full)."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivot.cache.state import StateDB
from pivot.remote import identity

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEX = re.compile(r"[0-9a-f]{32}")
near = st.builds(
    lambda body, tail: identity.PREFIX + body + tail,
    st.binary(min_size=30, max_size=34)
    | st.text("0123456789abcdefABCDEF \n", min_size=31, max_size=34).map(str.encode),
    st.sampled_from([b"", b"\n", b"\r\n", b"\x00"]),
)


@FUZZ
@given(st.binary(max_size=120) | near)
def test_any_bytes_decode_to_one_id_or_none(data):
    found = identity.decode(data)
    assert found is None or (HEX.fullmatch(found) and identity.encode(found) == data)


@FUZZ
@given(st.binary(min_size=16, max_size=16))
def test_ids_round_trip(raw):
    assert identity.decode(identity.encode(raw.hex())) == raw.hex()


def test_a_damaged_record_in_the_state_db_is_no_record(tmp_path):
    state = StateDB(tmp_path / "state.db")
    try:
        for bad in (b"", b"x" * 33, b"A" * 32 + b"\n", b"0" * 32, b"0" * 32 + b"\n\n"):
            state.put(identity.NAMESPACE, "tag", bad)
            assert identity.recorded(state, "tag") is None
        identity.record(state, "tag", "0" * 32)
        assert identity.recorded(state, "tag") == "0" * 32
        identity.record(state, "tag", None)
        assert identity.recorded(state, "tag") is None
    finally:
        state.close()
