"""Property-based fuzzing of every decoder that reads untrusted bytes: any input yields a
valid value or a PivotError naming what was read, never another exception, and no decoded
path can leave the project."""

from __future__ import annotations

import json
import math
import pathlib

import msgpack
from fuzz_support import anything
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pivot.cache import encoding, local_packs
from pivot.cache.hashing import DIR, FILE, decode_tree, is_hash
from pivot.cache.runs import decode_record
from pivot.errors import PivotError
from pivot.project import safe_relpath
from pivot.remote import packs
from pivot.run.lockfile import parse_lock

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HASH = "ab" * 32

paths = st.sampled_from(
    ["a.txt", "out/x", "../up", "/abs", ".git/hooks", "a//b", "", "a\\b", "./a"]
) | st.text(max_size=12)
hashes = st.sampled_from([HASH, "AB" * 32, "ab" * 31, ""]) | st.text(max_size=70)
sizes = st.sampled_from([0, 5, -1, 2**70]) | st.floats() | st.text(max_size=3)
kinds = st.sampled_from([FILE, DIR, "link"]) | anything


def _check_path(path: str) -> None:
    safe_relpath(path, "fuzzed path")  # a decoded path must pass the project validator


def _check_size(size: object) -> None:
    assert isinstance(size, int) and 0 <= size < 2**63, size


# ----- lock files --------------------------------------------------------------------


lock_shaped = st.fixed_dictionaries(
    {
        "schema": st.sampled_from([1, 2, "1"]) | anything,
        "stage": st.text(max_size=10) | anything,
        "run_key": hashes | anything,
        "fingerprint": st.dictionaries(st.text(max_size=5), st.text(max_size=5)) | anything,
        "params": st.dictionaries(st.text(max_size=5), anything) | anything,
        "deps": st.dictionaries(paths, hashes, max_size=3) | anything,
        "outs": st.dictionaries(
            paths,
            st.fixed_dictionaries({"hash": hashes, "size": sizes, "kind": kinds}) | anything,
            max_size=3,
        )
        | anything,
    }
)


def _parse_lock_or_error(text: str) -> None:
    where = pathlib.Path("/project/.pivot/stages/p/s.lock")
    try:
        lock = parse_lock(text, where)
    except PivotError as exc:
        assert str(where) in str(exc)
        return
    assert is_hash(lock.run_key)
    for path, out in lock.outs.items():
        _check_path(path)
        assert is_hash(out["hash"]) and out["kind"] in (FILE, DIR)
        _check_size(out["size"])
    for path, digest in lock.deps.items():
        _check_path(path)
        assert isinstance(digest, str)


@FUZZ
@given(lock_shaped)
@example(
    {
        "schema": 1,
        "stage": "s",
        "run_key": HASH,
        "fingerprint": {},
        "params": {},
        "deps": {},
        "outs": {"o": {"hash": HASH, "size": math.inf, "kind": FILE}},
    }
)
def test_lock_files_shaped(body: dict) -> None:
    _parse_lock_or_error(json.dumps(body, default=repr))


@FUZZ
@given(st.text(max_size=200))
@example("[" * 100_000)
@example('{"schema": 1, "outs": {"o": {"size": Infinity}}}')
def test_lock_files_any_text(text: str) -> None:
    _parse_lock_or_error(text)


# ----- msgpack decoders: tree manifests, run records, remote and local indexes ----------


def _decodes_or_error(decode, data: bytes, what: str):
    try:
        return decode(data)
    except PivotError as exc:
        assert what in str(exc)
        return None


tree_rows = st.lists(
    st.tuples(paths, hashes, sizes, st.sampled_from([0o644, 0o755, 0o6777, -1]) | anything)
    | anything,
    max_size=4,
)
# Well-formed rows over a few nested names: entries named twice, or both as a file and as
# a folder of another entry, are common.
clashing_rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "a/b", "a/b/c", "b", "ab"]), st.just(HASH), st.just(1), st.just(0o644)
    ),
    max_size=4,
)


@FUZZ
@given(
    (tree_rows | clashing_rows).map(
        lambda rows: msgpack.packb(rows, use_bin_type=True, default=repr)
    )
    | st.binary(max_size=200)
)
@example(msgpack.packb([["a", HASH, math.inf, 0o644]]))
@example(msgpack.packb([["a", HASH, 1, 0o644], ["a", HASH, 1, 0o644]]))
@example(msgpack.packb([["a/b", HASH, 1, 0o644], ["a", HASH, 1, 0o644]]))
@example(msgpack.packb([["a", HASH, 2**64 - 1, 0o644]]))
def test_tree_manifests(data: bytes) -> None:
    entries = _decodes_or_error(lambda d: decode_tree(d, "T1"), data, "T1")
    for entry in entries or ():
        _check_path(entry.relpath)
        assert is_hash(entry.hash)
        _check_size(entry.size)
    names = [entry.relpath for entry in entries or ()]
    assert len(set(names)) == len(names), names  # each entry once
    folders = {name.rsplit("/", i)[0] for name in names for i in range(1, name.count("/") + 1)}
    assert not folders & set(names), names  # no entry is also another's folder


record_shaped = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 2]) | anything,
        "outs": st.dictionaries(paths, st.tuples(hashes, sizes, kinds) | anything, max_size=3)
        | anything,
    }
)


@FUZZ
@given(
    record_shaped.map(lambda r: msgpack.packb(r, use_bin_type=True, default=repr))
    | st.binary(max_size=200)
)
@example(msgpack.packb({"v": 1, "outs": {"o": [HASH, math.inf, FILE]}}))
def test_run_records(data: bytes) -> None:
    outs = _decodes_or_error(lambda d: decode_record(d, "record R1"), data, "R1")
    for path, out in (outs or {}).items():
        _check_path(path)
        assert is_hash(out["hash"]) and out["kind"] in (FILE, DIR)
        _check_size(out["size"])


raw_hash = st.sampled_from([bytes.fromhex(HASH), b"\x00" * 31]) | st.binary(max_size=33)
blob_rows = st.lists(
    st.tuples(raw_hash, sizes, sizes, sizes, st.sampled_from([0, 1, 7]) | anything) | anything,
    max_size=3,
)
index_shaped = st.fixed_dictionaries(
    {
        "format": st.sampled_from([packs.FORMAT_NAME, "other"]) | anything,
        "v": st.sampled_from([packs.FORMAT_VERSION, 99]) | anything,
        "packs": st.lists(st.tuples(raw_hash, blob_rows) | anything, max_size=3) | anything,
        "runs": st.lists(st.tuples(raw_hash, st.binary(max_size=40)) | anything, max_size=2)
        | anything,
    }
)


@FUZZ
@given(
    index_shaped.map(lambda r: msgpack.packb(r, use_bin_type=True, default=repr))
    | st.binary(max_size=200)
)
def test_remote_indexes(data: bytes) -> None:
    index = _decodes_or_error(lambda d: packs.decode_index(d, "index I1"), data, "I1")
    if index is None:
        return
    for pack in index.packs:
        assert is_hash(pack.pack_id)
        end = 0
        for blob in pack.blobs:
            assert is_hash(blob.hash) and blob.codec in encoding.CODECS
            for number in (blob.offset, blob.length, blob.size):
                _check_size(number)
            assert blob.offset >= end
            end = blob.offset + blob.length
    for run_key, record in index.runs:
        assert is_hash(run_key)
        decode_record(record, "record")


local_shaped = st.fixed_dictionaries(
    {"v": st.sampled_from([local_packs.INDEX_VERSION, 9]) | anything, "blobs": blob_rows | anything}
)


@FUZZ
@given(
    local_shaped.map(lambda r: msgpack.packb(r, use_bin_type=True, default=repr))
    | st.binary(max_size=200)
)
@example(msgpack.packb({"v": 1, "blobs": [[bytes.fromhex(HASH), -5, 3, 3, 0]]}))
@example(msgpack.packb({"v": 1, "blobs": [[bytes.fromhex(HASH), math.inf, 3, 3, 0]]}))
def test_local_pack_indexes(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("idx") / "p.idx"
    path.write_bytes(data)
    found = _decodes_or_error(lambda _: local_packs._decode_index(path, "p"), data, str(path))
    for digest, where in (found or {}).items():
        assert is_hash(digest) and where.codec in encoding.CODECS
        for number in (where.offset, where.length, where.size):
            _check_size(number)


@FUZZ
@given(
    st.binary(max_size=300),
    st.sampled_from(sorted(encoding.CODECS)) | st.integers(),
    st.integers(min_value=-1, max_value=1 << 20),
)
def test_stored_blobs(stored: bytes, codec: int, size: int) -> None:
    """A blob's stored form decodes to bytes or raises ValueError (callers name the pack)."""
    try:
        blob = encoding.decode_blob(stored, codec, size)
    except ValueError:
        return
    assert isinstance(blob, bytes)
