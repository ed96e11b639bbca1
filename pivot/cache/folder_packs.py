"""Storing the small files of a tracked folder as local packs (`pivot track`).

A loose object per file costs a create and a rename each, which dominate when tracking a
folder of many small files; packing them costs one pack and one index per `PACK_BYTES` of
content. The packs are the same local packs a fetch writes (`local_packs.py`): every cache
query reads them, a checkout places their blobs as copies, `gc` keeps a pack while any of
its blobs is live. Files over `PACK_FILE_MAX` are stored loose, as any output's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pivot.cache.batch import read_small
from pivot.cache.encoding import RAW, PackedBlob
from pivot.cache.hashing import file_mode, hash_bytes
from pivot.cache.parallel import in_parallel

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pivot.cache.batch import CacheBatch

# Files up to this size are packed; larger ones stay loose (and can be linked).
PACK_FILE_MAX = 1 << 20
# Content read, held in memory and written per pack.
PACK_BYTES = 64 << 20


def store_files(batch: CacheBatch, files: Sequence[str]) -> list[tuple[str, int, int]]:
    """(hash, size, checkout mode) of each file, staged in `batch`: the small ones packed,
    `PACK_BYTES` at a time, the rest loose."""
    sizes = in_parallel(lambda path: os.stat(path).st_size, files)
    results: list[tuple[str, int, int] | None] = [None] * len(files)
    loose: list[int] = []
    chunk: list[int] = []
    held = 0
    for i, size in enumerate(sizes):
        if size > PACK_FILE_MAX:
            loose.append(i)
            continue
        chunk.append(i)
        held += size
        if held >= PACK_BYTES:
            loose += _pack(batch, files, sizes, chunk, results)
            chunk, held = [], 0
    loose += _pack(batch, files, sizes, chunk, results)
    for i, stored in zip(
        loose, in_parallel(batch._add_file, [files[i] for i in loose]), strict=True
    ):
        results[i] = stored
    return results  # type: ignore[return-value]


def _pack(
    batch: CacheBatch,
    files: Sequence[str],
    sizes: list[int],
    chunk: list[int],
    results: list[tuple[str, int, int] | None],
) -> list[int]:
    """Read and hash the files `chunk` indexes and stage them as one pack; returns those
    that grew past `PACK_FILE_MAX` since their size was read (to be stored loose)."""
    if not chunk:
        return []

    def read(i: int) -> tuple[bytes, str, int] | None:
        fd = os.open(files[i], os.O_RDONLY | os.O_CLOEXEC)
        try:
            mode = file_mode(os.fstat(fd))
            data = read_small(fd, sizes[i], limit=PACK_FILE_MAX)
        finally:
            os.close(fd)
        return None if len(data) > PACK_FILE_MAX else (data, hash_bytes(data), mode)

    blobs = []
    grew = []
    for i, found in zip(chunk, in_parallel(read, chunk), strict=True):
        if found is None:
            grew.append(i)
            continue
        data, digest, mode = found
        results[i] = (digest, len(data), mode)
        blobs.append((PackedBlob("", 0, len(data), len(data), RAW, digest), data))
    batch.put_packed(blobs)
    return grew
