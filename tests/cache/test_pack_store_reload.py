"""The map of local packs is re-read when another process changed the packs folder, and
only the indexes that changed are decoded again: added, rewritten (a damaged blob dropped)
and removed packs are all seen, and the packs this process committed are not decoded."""

from __future__ import annotations

import os

from pivot.cache import local_packs
from pivot.cache.hashing import hash_bytes
from pivot.cache.local_packs import PackStore
from pivot.cache.objects import LocalCache


def _pack(cache: LocalCache, label: str) -> list[str]:
    """Commit one local pack of three blobs through `cache`; their hashes."""
    blobs = [(hash_bytes(data), data) for data in (f"{label} {i}\n".encode() for i in range(3))]
    with cache.batch() as batch:
        assert batch.put_new_packed(blobs) == 3
    return [digest for digest, _ in blobs]


def _touched(root) -> None:
    """Give the packs folder a new mtime, as a change by another process eventually does
    (two changes within the clock's granularity may leave it as it was)."""
    st = os.stat(root)
    os.utime(root, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_other_process_changes_are_seen_decoding_only_changed_indexes(tmp_path, monkeypatch):
    decoded: list[str] = []
    real = local_packs._decode_index

    def counting(path, pack):
        decoded.append(pack)
        return real(path, pack)

    monkeypatch.setattr(local_packs, "_decode_index", counting)
    cache = LocalCache(tmp_path / "cache", tmp_path / "tmp")
    first = _pack(cache, "first")
    other = PackStore(cache.packs.root)  # another process's view of the same folder
    assert set(other.blobs()) == set(first) and len(decoded) == 1
    # The committing store learnt its pack without decoding it, even once the folder's
    # mtime moves on.
    decoded.clear()
    second = _pack(cache, "second")
    _touched(cache.packs.root)
    assert set(cache.packs.blobs()) == {*first, *second} and decoded == []
    # The other view decodes the new index only.
    assert set(other.blobs()) == {*first, *second}
    assert decoded == [cache.packs.blobs()[second[0]].pack]
    # A rewritten index (a damaged blob dropped) is decoded again, the others are not.
    decoded.clear()
    where = cache.packs.blobs()[first[0]]
    cache.packs.drop(first[0], where)
    _touched(cache.packs.root)
    assert set(other.blobs()) == {*first[1:], *second}
    assert decoded == [where.pack] * len(decoded) and decoded
    # A removed pack disappears.
    decoded.clear()
    cache.packs.remove(where.pack)
    _touched(cache.packs.root)
    assert set(other.blobs()) == set(second) and decoded == []
    assert set(cache.packs.blobs()) == set(second)
