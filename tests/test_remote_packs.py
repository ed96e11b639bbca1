"""Packs and indexes: round trips, codecs, and validation of what a remote sends."""

from __future__ import annotations

import io
import os

import msgpack
import pytest

from pivot.errors import PivotError
from pivot.storage import packs
from pivot.storage.hashing import hash_bytes
from pivot.storage.runs import encode_record


def _record(path: str) -> bytes:
    return encode_record({path: {"hash": "a" * 64, "size": 1, "kind": "file"}})


def test_blob_codecs_round_trip():
    text = b"pivot " * 2000
    noise = os.urandom(4096)
    tiny = b"hi"
    stored, codec = packs.encode_blob(text)
    assert codec == packs.ZSTD and len(stored) < len(text) // 10
    assert packs.decode_blob(stored, codec, len(text)) == text
    assert packs.encode_blob(noise) == (noise, packs.RAW)
    assert packs.encode_blob(tiny) == (tiny, packs.RAW)
    with pytest.raises(ValueError):
        packs.decode_blob(stored, codec, len(text) + 1)
    with pytest.raises(ValueError):
        packs.decode_blob(b"\x00" * 40, packs.ZSTD, 10)


def test_pack_and_index_round_trip():
    builder = packs.PackBuilder()
    blobs = [b"pivot " * 500, os.urandom(1000), b""]
    for data in blobs:
        builder.add(hash_bytes(data), data)
    data, info = builder.finish()
    assert info.pack_id == hash_bytes(data)
    for blob, entry in zip(blobs, info.blobs, strict=True):
        stored = data[entry.offset : entry.offset + entry.length]
        assert packs.decode_blob(stored, entry.codec, entry.size) == blob
    runs = [("b" * 64, _record("out/x.txt"))]
    encoded = packs.encode_index([info], runs)
    assert encoded == packs.encode_index([info], runs)  # deterministic
    decoded = packs.decode_index(encoded, "index")
    assert decoded.packs == (info,)
    assert decoded.runs == tuple(runs)


def test_stream_compression_round_trip(tmp_path):
    src = tmp_path / "big"
    src.write_bytes(b"abc" * 300_000 + os.urandom(1000))
    out = io.BytesIO()
    stored, stored_hash, source_hash = packs.compress_file(src, out, src.stat().st_size)
    assert source_hash == hash_bytes(src.read_bytes())
    assert stored == len(out.getvalue()) and stored_hash == hash_bytes(out.getvalue())
    back = io.BytesIO()
    size, digest = packs.decompress_stream(io.BytesIO(out.getvalue()), back)
    assert (size, digest) == (src.stat().st_size, source_hash)
    assert back.getvalue() == src.read_bytes()
    assert packs.compresses(src, src.stat().st_size)
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(1 << 20))
    assert not packs.compresses(noise, 1 << 20)


def _index(**overrides):
    body = {
        "format": packs.FORMAT_NAME,
        "v": packs.FORMAT_VERSION,
        "packs": [[b"\x01" * 32, [[b"\x02" * 32, 0, 10, 10, packs.RAW]]]],
        "runs": [],
    }
    body.update(overrides)
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"v": 99}, "version 99"),
        ({"format": "other"}, "not a Pivot"),
        ({"packs": [[b"\x01" * 31, []]]}, "32 bytes"),
        ({"packs": [[b"\x01" * 32, [[b"\x02" * 32, 0, 10, 9, packs.RAW]]]]}, "codec"),
        ({"packs": [[b"\x01" * 32, [[b"\x02" * 32, 0, 5, 9, 7]]]]}, "codec"),
        (
            {"packs": [[b"\x01" * 32, [[b"\x02" * 32, 0, 10, 10, 0], [b"\x03" * 32, 5, 4, 4, 0]]]]},
            "overlapping",
        ),
        ({"runs": [[b"\x04" * 32, "text"]]}, "not bytes"),
    ],
)
def test_index_validation(overrides, message):
    with pytest.raises(PivotError, match=message):
        packs.decode_index(_index(**overrides), "index X")


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b", "a//b", ""])
def test_index_run_records_with_unsafe_paths_are_rejected(path):
    data = _index(runs=[[b"\x04" * 32, _record(path)]])
    with pytest.raises(PivotError, match=r"Refusing|corrupt"):
        packs.decode_index(data, "index X")


def test_garbage_index():
    with pytest.raises(PivotError, match="corrupt"):
        packs.decode_index(b"\xc1\xff\x00garbage", "index X")
