"""Packs and indexes: round trips, codecs, and validation of what a remote sends."""

from __future__ import annotations

import io
import os

import msgpack
import pytest

from pivot.cache import encoding
from pivot.cache.hashing import hash_bytes, is_hash
from pivot.cache.runs import encode_record
from pivot.errors import PivotError
from pivot.remote import packs


def _record(path: str) -> bytes:
    return encode_record({path: {"hash": "a" * 64, "size": 1, "kind": "file"}})


def test_blob_codecs_round_trip():
    text = b"pivot " * 2000
    noise = os.urandom(4096)
    tiny = b"hi"
    stored, codec = encoding.encode_blob(text)
    assert codec == encoding.ZSTD and len(stored) < len(text) // 10
    assert encoding.decode_blob(stored, codec, len(text)) == text
    assert encoding.encode_blob(noise) == (noise, encoding.RAW)
    assert encoding.encode_blob(tiny) == (tiny, encoding.RAW)
    with pytest.raises(ValueError):
        encoding.decode_blob(stored, codec, len(text) + 1)
    with pytest.raises(ValueError):
        encoding.decode_blob(b"\x00" * 40, encoding.ZSTD, 10)


def test_pack_and_index_round_trip():
    builder = packs.PackBuilder()
    blobs = [b"pivot " * 500, os.urandom(1000), b""]
    for data in blobs:
        builder.add(hash_bytes(data), data)
    data, info = builder.finish()
    assert info.pack_id == hash_bytes(data)
    for blob, entry in zip(blobs, info.blobs, strict=True):
        stored = data[entry.offset : entry.offset + entry.length]
        assert encoding.decode_blob(stored, entry.codec, entry.size) == blob
    runs = [("b" * 64, _record("out/x.txt"))]
    encoded = packs.encode_index([info], runs)
    assert encoded == packs.encode_index([info], runs)  # deterministic
    decoded = packs.decode_index(encoded, "index")
    assert decoded.packs == (info,)
    assert decoded.runs == tuple(runs)


def test_stream_compression_round_trip(tmp_path):
    src = tmp_path / "big"
    src.write_bytes(os.urandom(300_000).hex().encode() + b"abc" * 300_000)
    size = src.stat().st_size
    compressor = packs.StoredFile(src, size, 100_000, encoding.ZSTD)
    parts = list(compressor.parts())
    assert len(parts) > 2 and {len(p) for p in parts[:-1]} == {100_000}
    stored = b"".join(parts)
    assert compressor.source_hash == hash_bytes(src.read_bytes())
    assert compressor.stored == len(stored) < size
    again = packs.StoredFile(src, size, 100_000, encoding.ZSTD)
    assert b"".join(again.parts()) == stored  # the same bytes: a pack name can precede them
    back = io.BytesIO()
    assert packs.decompress_stream(io.BytesIO(stored), back) == (size, compressor.source_hash)
    assert back.getvalue() == src.read_bytes()
    assert packs.compresses(src, size)
    noise = tmp_path / "noise"
    noise.write_bytes(os.urandom(1 << 20))
    assert not packs.compresses(noise, 1 << 20)
    raw = packs.StoredFile(noise, 1 << 20, 300_000, encoding.RAW)
    raw_parts = list(raw.parts())
    assert [len(p) for p in raw_parts] == [300_000] * 3 + [(1 << 20) - 900_000]
    assert b"".join(raw_parts) == noise.read_bytes() and raw.stored == 1 << 20
    assert raw.source_hash == hash_bytes(noise.read_bytes())


def test_large_pack_ids_name_blob_and_compressor():
    digest = "ab" * 32
    assert packs.large_pack_id(digest, encoding.RAW) == digest
    zstd_id = packs.large_pack_id(digest, encoding.ZSTD)
    assert is_hash(zstd_id) and zstd_id not in (digest, packs.large_pack_id("cd" * 32, 1))


def _index(**overrides):
    body = {
        "format": packs.FORMAT_NAME,
        "v": packs.FORMAT_VERSION,
        "packs": [[b"\x01" * 32, [[b"\x02" * 32, 0, 10, 10, encoding.RAW]]]],
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
        ({"packs": [[b"\x01" * 32, [[b"\x02" * 32, 0, 10, 9, encoding.RAW]]]]}, "codec"),
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
