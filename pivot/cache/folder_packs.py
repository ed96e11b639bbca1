"""Storing the small files of a folder as local packs (`pivot track`, and directory
outputs of many files).

A loose object per file costs a create and a rename each, which dominate when storing a
folder of many small files; packing them costs one pack and one index per `PACK_BYTES` of
content. The packs are the same local packs a fetch writes (`local_packs.py`): every cache
query reads them, a checkout places their blobs as copies, `gc` keeps a pack while any of
its blobs is live. Files over `PACK_FILE_MAX` are stored loose, as any output's.
"""

from __future__ import annotations

import os
from stat import S_IXUSR
from typing import TYPE_CHECKING

from blake3 import blake3

from pivot.cache.batch import PackWriter, read_small
from pivot.cache.parallel import SLICE, run_slices

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pivot.cache.batch import CacheBatch

# Files up to this size are packed; larger ones stay loose (and can be linked).
PACK_FILE_MAX = 1 << 20
# Content per pack (written as it is read, not held in memory).
PACK_BYTES = 64 << 20
# (hash, size, checkout mode, the stat under which the file had that content, or None if
# it changed while it was read) of one stored file.
Stored = tuple[str, int, int, os.stat_result | None]


def store_files(
    batch: CacheBatch, files: Sequence[str], open_file: Callable[[str], int]
) -> list[Stored]:
    """What each of `files` is, staged in `batch`: the small ones packed, `PACK_BYTES` at a
    time, the rest loose. One pass over the files on the cache's threads: each is opened
    (`open_file`, a read descriptor), stat-ed and read once."""
    results: list[Stored] = [None] * len(files)  # type: ignore[list-item]
    pack = PackWriter(batch, PACK_BYTES)

    def store(part: range) -> None:
        blobs = []
        for i in part:
            fd = open_file(files[i])
            try:
                st = os.fstat(fd)
                mode = 0o755 if st.st_mode & S_IXUSR else 0o644  # as `file_mode`
                if st.st_size <= PACK_FILE_MAX:
                    data = os.read(fd, st.st_size + 1)
                    if len(data) == st.st_size:  # read whole, as the stat found it
                        digest = blake3(data).hexdigest()
                        blobs.append((digest, data))
                        results[i] = (digest, len(data), mode, st)
                        continue
                    data += read_small(fd, 0, limit=PACK_FILE_MAX)  # changed since the stat
                    if len(data) <= PACK_FILE_MAX:
                        digest = blake3(data).hexdigest()
                        blobs.append((digest, data))
                        results[i] = (digest, len(data), mode, None)
                        continue
                    os.lseek(fd, 0, os.SEEK_SET)  # it grew past the limit: store it loose
                    st = os.fstat(fd)
                digest, size, mode = batch.add_open(fd, st)
                results[i] = (digest, size, mode, st if size == st.st_size else None)
            finally:
                os.close(fd)
        pack.add(blobs)

    indexes = range(len(files))  # a pool task stores SLICE files
    try:
        run_slices(store, [[indexes[i : i + SLICE]] for i in indexes[::SLICE]], len(files))
    except BaseException:
        pack.abandon()
        raise
    pack.close()
    return results
