"""The local content-addressed store under `.pivot/cache/objects`, and checkout from it."""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import pathlib
import shutil
import stat
import tempfile
from dataclasses import dataclass

import blake3

from pivot.errors import PivotError
from pivot.storage.hashing import (
    CHUNK,
    DIR,
    FILE,
    TreeEntry,
    decode_tree,
    encode_tree,
    file_mode,
    hash_bytes,
    is_hash,
)

FICLONE = 0x40049409
READ_ONLY = 0o444


class LinkMode(enum.StrEnum):
    """How a checkout places a cached file into the workspace."""

    COPY = "copy"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class StoredOutput:
    """What the cache holds for one output path."""

    hash: str
    size: int
    kind: str
    nfiles: int = 1


class LocalCache:
    """Blobs addressed by BLAKE3, sharded by the first two hex digits, read-only."""

    def __init__(self, cache_dir: pathlib.Path, tmp_dir: pathlib.Path) -> None:
        self.objects = cache_dir / "objects"
        self.tmp_dir = tmp_dir

    def path(self, digest: str) -> pathlib.Path:
        if not is_hash(digest):
            raise PivotError(f"Refusing to address the cache with an invalid hash {digest!r}.")
        return self.objects / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read_bytes(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def _tmp(self) -> tuple[int, str]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=self.tmp_dir, prefix="blob.")

    def _publish(self, tmp: str, digest: str) -> None:
        os.chmod(tmp, READ_ONLY)
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def add_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store `data`; the hash is computed here unless already known."""
        digest = digest or hash_bytes(data)
        if self.has(digest):
            return digest
        fd, tmp = self._tmp()
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._publish(tmp, digest)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return digest

    def add_file(self, src: pathlib.Path) -> tuple[str, int]:
        """Copy `src` into the cache, hashing what is copied; returns (hash, size)."""
        hasher = blake3.blake3()
        size = 0
        fd, tmp = self._tmp()
        try:
            with open(src, "rb") as source, os.fdopen(fd, "wb") as target:
                while chunk := source.read(CHUNK):
                    hasher.update(chunk)
                    target.write(chunk)
                    size += len(chunk)
                target.flush()
                os.fsync(target.fileno())
            digest = hasher.hexdigest()
            if self.has(digest):
                _unlink_quietly(tmp)
            else:
                self._publish(tmp, digest)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return digest, size

    def add_output(self, path: pathlib.Path) -> tuple[StoredOutput, list[tuple[str, str]]]:
        """Store a file or directory output; returns it and (relative file, hash) pairs."""
        if path.is_dir():
            entries = []
            files = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in filenames:
                    full = pathlib.Path(dirpath, name)
                    digest, size = self.add_file(full)
                    inner = full.relative_to(path).as_posix()
                    entries.append(TreeEntry(inner, digest, size, file_mode(full.stat())))
                    files.append((inner, digest))
            digest = self.add_bytes(encode_tree(entries))
            total = sum(e.size for e in entries)
            return StoredOutput(digest, total, DIR, len(entries)), files
        digest, size = self.add_file(path)
        return StoredOutput(digest, size, FILE), [("", digest)]

    def tree(self, digest: str) -> list[TreeEntry]:
        return decode_tree(self.read_bytes(digest), f"{digest[:12]} in the local cache")

    def blobs_of(self, digest: str, kind: str) -> list[str]:
        """Every blob an output needs: itself, plus its files for a tree."""
        if kind == DIR:
            return [digest, *(e.hash for e in self.tree(digest))]
        return [digest]

    def missing(self, digest: str, kind: str) -> list[str]:
        """Blobs of an output that are not in the local cache (a missing tree counts alone)."""
        if not self.has(digest):
            return [digest]
        if kind == DIR:
            return [e.hash for e in self.tree(digest) if not self.has(e.hash)]
        return []

    def checkout(
        self, digest: str, kind: str, dest: pathlib.Path, mode: LinkMode = LinkMode.COPY
    ) -> list[tuple[str, str]]:
        """Place an output at `dest` from the cache; returns (relative file, hash) pairs."""
        remove_path(dest)
        if kind == DIR:
            dest.mkdir(parents=True)
            placed = []
            for entry in self.tree(digest):
                target = dest / entry.relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                self._place(entry.hash, target, mode, entry.mode)
                placed.append((entry.relpath, entry.hash))
            return placed
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._place(digest, dest, mode, 0o644)
        return [("", digest)]

    def _place(self, digest: str, dest: pathlib.Path, mode: LinkMode, file_mode: int) -> None:
        src = self.path(digest)
        if mode is LinkMode.HARDLINK:
            os.link(src, dest)
        elif mode is LinkMode.SYMLINK:
            os.symlink(src, dest)
        else:
            tmp = dest.with_name(f".{dest.name}.pivot-tmp")
            clone_or_copy(src, tmp)
            os.chmod(tmp, file_mode)
            os.replace(tmp, dest)


def clone_or_copy(src: pathlib.Path, dest: pathlib.Path) -> None:
    """Reflink `src` to `dest` where the filesystem can, else copy it."""
    with open(src, "rb") as source, open(dest, "wb") as target:
        try:
            fcntl.ioctl(target.fileno(), FICLONE, source.fileno())
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                raise
        shutil.copyfileobj(source, target, CHUNK)


def remove_path(path: pathlib.Path) -> None:
    """Remove a file, link or directory tree (read-only entries included)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
