"""How a blob is stored in a pack, local or remote: one zstd frame, or its raw bytes when
compression does not pay (docs/remote-format.md)."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from types import ModuleType

    import zstandard

RAW = 0
ZSTD = 1
CODECS = (RAW, ZSTD)
# Level 1: on the bench's text, 4 % larger than level 3 for 4 KB files and 0.3 % for 64 MB
# ones, for two thirds of the CPU (push is CPU-bound on loopback).
LEVEL = 1
# A blob is stored compressed only when zstd saves at least this fraction of it.
MIN_SAVING = 0.05
TINY = 64

_local = threading.local()


class PackedBlob(NamedTuple):
    """Where one stored blob lies in a pack, local or remote, and how to read it back:
    `length` stored bytes at `offset` of `pack` decode (`codec`) to `size` bytes that hash
    to `hash`. Ordered by pack, then offset."""

    pack: str
    offset: int
    length: int
    size: int
    codec: int
    hash: str


def _cctx() -> zstandard.ZstdCompressor:
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        import zstandard  # not imported by a command that packs and unpacks nothing

        cctx = _local.cctx = zstandard.ZstdCompressor(level=LEVEL)
    return cctx


def _dctx() -> zstandard.ZstdDecompressor:
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        import zstandard

        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def encode_blob(data: bytes) -> tuple[bytes, int]:
    """The stored form of a small blob and its codec: zstd unless that does not pay."""
    if len(data) < TINY:
        return data, RAW
    frame = _cctx().compress(data)
    if len(frame) <= len(data) * (1 - MIN_SAVING):
        return frame, ZSTD
    return data, RAW


@functools.cache
def _zstandard() -> ModuleType:
    """The zstandard module, imported on first use: a cached call per blob is cheap, an
    `import` statement per blob was a fifth of reading back 100,000 small packed blobs."""
    import zstandard

    return zstandard


def decode_blob(stored: bytes | memoryview, codec: int, size: int) -> bytes:
    """The blob bytes from its stored form (not yet verified)."""
    if codec == RAW:
        return bytes(stored)
    zstandard = _zstandard()
    try:
        if zstandard.frame_content_size(stored) != size:
            raise ValueError("zstd frame header does not give the indexed size")
        return _dctx().decompress(stored)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd frame does not decode: {exc}") from exc
