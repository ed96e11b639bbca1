"""Packs and indexes: how blobs are laid out on a remote (see docs/remote-format.md).

A pack is a concatenation of stored blobs, each either one zstd frame or the raw bytes.
An index names packs and, for each blob, where it lies in its pack; it may also carry run
records. Packs and indexes are named by the BLAKE3 of their bytes, so concurrent pushers
never overwrite each other with different content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import blake3
import msgpack
import zstandard

from pivot.cache.encoding import CODECS, LEVEL, MIN_SAVING, RAW, ZSTD, PackedBlob, encode_blob
from pivot.cache.hashing import CHUNK, is_hash, new_hasher, stream_hashing
from pivot.cache.runs import decode_record
from pivot.errors import CorruptFile
from pivot.untrusted import LIMIT, count

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Iterable, Iterator

FORMAT_NAME = "pivot-remote-index"
FORMAT_VERSION = 1
SAMPLE = 128 << 10


@dataclass(frozen=True, slots=True)
class PackInfo:
    pack_id: str
    blobs: tuple[PackedBlob, ...]

    @property
    def stored(self) -> int:
        return sum(b.length for b in self.blobs)


@dataclass(frozen=True, slots=True)
class Index:
    """One decoded index object."""

    packs: tuple[PackInfo, ...]
    runs: tuple[tuple[str, bytes], ...]


def compresses(path: pathlib.Path, size: int) -> bool:
    """Whether samples from the start, middle and end of a file compress worthwhile."""
    offsets = sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)})
    raw = 0
    packed = 0
    cctx = zstandard.ZstdCompressor(level=1)
    with open(path, "rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            chunk = handle.read(SAMPLE)
            raw += len(chunk)
            packed += len(cctx.compress(chunk))
    return raw > 0 and packed <= raw * (1 - MIN_SAVING)


class StoredFile:
    """One large file's stored form (one zstd frame, or raw), handed out in parts of
    `part_size` bytes while the file is read once.

    Iterate over `parts()`; afterwards `stored` is the stored length and `source_hash` the
    BLAKE3 of the bytes read. The output depends only on the file's bytes and the codec
    (for zstd: its version and level), so `large_pack_id` can name the pack before it
    exists.
    """

    def __init__(self, src: pathlib.Path, size: int, part_size: int, codec: int) -> None:
        self.src = src
        self.size = size
        self.part_size = part_size
        self.codec = codec
        self.stored = 0
        self.source_hash = ""

    def parts(self) -> Iterator[bytes]:
        hasher = new_hasher()
        chunker = None
        if self.codec == ZSTD:
            # Single-threaded: large blobs are compressed side by side
            # (transfer.LARGE_PARALLEL), and zstd's worker threads cost a third more CPU.
            cctx = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)
            chunker = cctx.chunker(size=self.size, chunk_size=self.part_size)
        read_size = CHUNK if chunker else self.part_size
        with open(self.src, "rb", buffering=0) as source:
            while chunk := source.read(read_size):
                hasher.update(chunk)
                for part in chunker.compress(chunk) if chunker else (chunk,):
                    self.stored += len(part)
                    yield part
        for part in chunker.finish() if chunker else ():
            self.stored += len(part)
            yield part
        self.source_hash = hasher.hexdigest()


def large_pack_id(digest: str, codec: int) -> str:
    """The id of the pack holding only the large blob `digest`: the blob hash when raw,
    else a hash of the blob hash and the compressor (see docs/remote-format.md)."""
    if codec == RAW:
        return digest
    tag = f"pivot-pack zstd {'.'.join(map(str, zstandard.ZSTD_VERSION))} level {LEVEL} "
    return blake3.blake3(tag.encode() + bytes.fromhex(digest)).hexdigest()


def decompress_stream(src: BinaryIO, dest: BinaryIO) -> tuple[int, str]:
    """Decompress one zstd frame from `src` into `dest`; returns (size, BLAKE3)."""
    reader = zstandard.ZstdDecompressor().stream_reader(src, read_size=CHUNK)
    try:
        return stream_hashing(reader, dest)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd stream does not decode: {exc}") from exc


# ----- packs -----


class PackBuilder:
    """Accumulates small blobs into one pack in memory."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        # (offset, length, size, codec, hash) of each blob, made PackedBlobs by `finish`
        self.entries: list[tuple[int, int, int, int, str]] = []
        self.offset = 0

    def add(self, digest: str, data: bytes) -> None:
        stored, codec = encode_blob(data)
        self.parts.append(stored)
        self.entries.append((self.offset, len(stored), len(data), codec, digest))
        self.offset += len(stored)

    def finish(self) -> tuple[bytes, PackInfo]:
        data = b"".join(self.parts)
        pack_id = blake3.blake3(data).hexdigest()
        blobs = tuple(PackedBlob(pack_id, *entry) for entry in self.entries)
        return data, PackInfo(pack_id, blobs)


# ----- indexes -----


def encode_index(packs: Iterable[PackInfo], runs: Iterable[tuple[str, bytes]]) -> bytes:
    """The msgpack bytes of an index (deterministic for the same content)."""
    body = {
        "format": FORMAT_NAME,
        "v": FORMAT_VERSION,
        "packs": [
            [
                bytes.fromhex(p.pack_id),
                [[bytes.fromhex(b.hash), b.offset, b.length, b.size, b.codec] for b in p.blobs],
            ]
            for p in packs
        ],
        "runs": [[bytes.fromhex(k), bytes(v)] for k, v in sorted(runs)],
    }
    return msgpack.packb(body, use_bin_type=True)


def index_id(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def decode_index(data: bytes, what: str) -> Index:
    """Parse and validate an index; any inconsistency raises CorruptFile naming `what`."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise ValueError("not a Pivot remote index")
        if raw.get("v") != FORMAT_VERSION:
            raise ValueError(
                f"format version {raw.get('v')!r} is not supported (this Pivot reads "
                f"version {FORMAT_VERSION}; upgrade Pivot)"
            )
        packs = tuple(_decode_pack(p) for p in raw["packs"])
        runs = []
        for key, record in raw["runs"]:
            run_key = _hex(key)
            if not isinstance(record, bytes):
                raise ValueError("a run record is not bytes")
            runs.append((run_key, record))
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise CorruptFile(f"The {what} is corrupt or unsupported ({exc}).", path=what) from exc
    for run_key, record in runs:
        decode_record(record, f"run record {run_key[:12]} in the {what}")
    return Index(packs, tuple(runs))


def _hex(value: object) -> str:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError("a hash is not 32 bytes")
    return value.hex()


def _decode_pack(item: object) -> PackInfo:
    pack_raw, blobs_raw = item  # type: ignore[misc]
    pack_id = _hex(pack_raw)
    blobs = []
    end = 0
    for row in blobs_raw:
        digest, offset, length, size, codec = row
        # The plain case checked inline (a call per field was most of reading the index
        # of a 100,000-blob push); anything else gets `count`'s and `_hex`'s checks.
        if not (
            type(offset) is int
            and type(length) is int
            and type(size) is int
            and type(codec) is int
            and 0 <= offset < LIMIT
            and 0 <= length < LIMIT
            and 0 <= size < LIMIT
            and type(digest) is bytes
            and len(digest) == 32
        ):
            offset, length, size, codec = count(offset), count(length), count(size), count(codec)
            _hex(digest)
        entry = PackedBlob(pack_id, offset, length, size, codec, digest.hex())
        if entry.offset < end or entry.length < 0 or entry.size < 0:
            raise ValueError(f"pack {pack_id[:12]} has overlapping or negative ranges")
        if entry.codec not in CODECS or (entry.codec == RAW and entry.length != entry.size):
            raise ValueError(f"pack {pack_id[:12]} has an invalid codec entry")
        end = entry.offset + entry.length
        blobs.append(entry)
    if not is_hash(pack_id):
        raise ValueError("invalid pack id")
    return PackInfo(pack_id, tuple(blobs))
