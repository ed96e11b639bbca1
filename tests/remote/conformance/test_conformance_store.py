"""The ObjectStore contract (pivot/remote/stores.py), held by every backend in conftest.py."""

from __future__ import annotations

import os

import pytest

from pivot.errors import PivotError
from pivot.remote.stores import Remote

pytestmark = pytest.mark.every_backend  # the contract is cheap: held on every backend

DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable
DEEP = "a/b/c/d/e/f/object"


def test_put_then_get_returns_the_bytes(remote: Remote):
    remote.put_bytes("packs/ab/one", DATA)
    assert remote.store.get("packs/ab/one") == DATA
    assert remote.get_bytes("packs/ab/one") == DATA


def test_overwrite_replaces_the_whole_object(remote: Remote):
    remote.put_bytes("index/x", DATA)
    remote.put_bytes("index/x", b"short")
    assert remote.get_bytes("index/x") == b"short"
    remote.put_parts("index/x", iter([b"one part"]))  # below 5 MiB: one part
    assert remote.get_bytes("index/x") == b"one part"
    assert remote.store.names("index") == ["x"]


def test_empty_objects(remote: Remote, tmp_path):
    remote.put_bytes("index/empty", b"")
    remote.put_parts("index/empty-parts", iter([]))
    assert remote.get_bytes("index/empty") == b"" and remote.get_bytes("index/empty-parts") == b""
    remote.get_file("index/empty", tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == b""
    assert sorted(remote.store.names("index")) == ["empty", "empty-parts"]


def test_ranged_reads(remote: Remote):
    remote.put_bytes("packs/ab/r", DATA)
    for start, end in [(0, 1), (0, len(DATA)), (1, 2), (255, 4097), (len(DATA) - 1, len(DATA))]:
        assert remote.store.get("packs/ab/r", start, end) == DATA[start:end]
        assert remote.get_range("packs/ab/r", start, end) == DATA[start:end]
        assert remote.read_range("packs/ab/r", start, end, lambda s: s.read()) == DATA[start:end]
        with remote.store.open_range("packs/ab/r", start, end) as stream:
            assert stream.read(end - start) == DATA[start:end]  # it may run on past `end`
        assert remote.read_range("packs/ab/r", start, None, lambda s: s.read()) == DATA[start:]


def test_range_past_the_end_is_short_and_named(remote: Remote):
    """A pack shorter than its index says (truncated by a tool or an upload) reads short,
    and is reported in the same words on every backend."""
    remote.put_bytes("packs/ab/r", DATA)
    for start in (len(DATA) - 10, len(DATA), len(DATA) + 5):
        got = remote.store.get("packs/ab/r", start, start + 20)
        assert got == DATA[start : start + 20]
        assert remote.read_range("packs/ab/r", start, start + 20, lambda s: s.read()) == got
        with pytest.raises(PivotError) as info:
            remote.get_range("packs/ab/r", start, start + 20)
        assert str(info.value) == (
            f"Remote 'test' ({remote.url}): packs/ab/r is shorter than its index says (asked "
            f"bytes {start}-{start + 20}, got {len(got)}). The pack is damaged; push the "
            f"affected outputs again from a machine that has them."
        )


def test_missing_key_is_file_not_found(remote: Remote, tmp_path):
    remote.put_bytes("packs/ab/present", b"x")  # the folder (and bucket) exist
    store = remote.store
    for read in (
        lambda: store.get("packs/ab/absent"),
        lambda: store.get("packs/ab/absent", 0, 1),
        lambda: store.get_file("packs/ab/absent", tmp_path / "dest"),
        lambda: store.open_range("packs/ab/absent", 0, None).__enter__(),
    ):
        with pytest.raises(FileNotFoundError):
            read()
    with pytest.raises(PivotError) as info:
        remote.get_bytes("packs/ab/absent")
    message = str(info.value)
    assert message.startswith(f"Cannot read packs/ab/absent from remote 'test' ({remote.url}): ")
    assert "an object is missing" in message and "push again" in message


def test_names_lists_every_object_under_a_folder(remote: Remote):
    assert remote.store.names("packs") == []  # nothing stored yet
    keys = [f"packs/{i:02x}/{i:02x}{'0' * 62}" for i in range(0, 256, 17)]
    for key in keys:
        remote.put_bytes(key, key.encode())
    remote.put_bytes("packsx/ff/sibling", b"s")  # a folder whose name starts the same
    remote.put_bytes("index/one", b"i")
    remote.put_bytes(DEEP, b"deep")
    assert sorted(remote.store.names("packs")) == sorted(k.rsplit("/", 1)[1] for k in keys)
    assert remote.store.names("index") == ["one"]
    assert remote.store.names("a") == ["object"] and remote.store.names("a/b/c") == ["object"]
    assert remote.store.names("nothing") == []


def test_keys_with_many_levels(remote: Remote, tmp_path):
    remote.put_bytes(DEEP, DATA)
    remote.put_parts(DEEP + "-parts", iter([DATA]))
    assert remote.get_range(DEEP, 10, 20) == DATA[10:20]
    remote.get_file(DEEP + "-parts", tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == DATA


def test_multipart_upload_and_download(remote: Remote, tmp_path):
    """Parts of S3's 5 MiB minimum: a real multipart upload, and a download in parts."""
    part = os.urandom(5 << 20)
    remote.put_parts("packs/mp/big", iter([part, part[::-1], b"tail"]))
    remote.get_file("packs/mp/big", tmp_path / "big")
    assert (tmp_path / "big").read_bytes() == part + part[::-1] + b"tail"
    end = (5 << 20) + 10
    assert remote.get_range("packs/mp/big", (5 << 20) - 10, end) == part[-10:] + part[::-1][:10]
    assert remote.clean_uploads(0) == 0  # none left unfinished


def test_failed_producer_stores_nothing(remote: Remote):
    remote.put_bytes("packs/ab/kept", b"old")

    def parts(first: bytes):
        yield first
        yield b"second part"
        raise OSError("the cache object could not be read")

    for key in ("packs/ab/new", "packs/ab/kept"):
        with pytest.raises(PivotError, match="the cache object could not be read"):
            remote.put_parts(key, parts(b"x" * 1000))
    assert remote.get_bytes("packs/ab/kept") == b"old"  # the old object is untouched
    assert remote.store.names("packs") == ["kept"]
    assert remote.clean_uploads(0) == 0  # the abandoned upload was discarded at once
