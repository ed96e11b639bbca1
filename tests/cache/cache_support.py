"""Shared pieces of the local cache tests: a sample tree with modes, snapshots, leftovers."""

from __future__ import annotations

import os
import pathlib
import stat

from pivot.cache.objects import LocalCache

# More files than PARALLEL_MIN, so trees go through the thread pool.
MANY = {f"many/{i % 7}/f{i:03d}.txt": f"file {i}\n".encode() * (i % 5) for i in range(150)}
TREE = {
    "a.txt": b"alpha\n" * 100,
    "run.sh": b"#!/bin/sh\necho hi\n",
    "sub/deeper/b.bin": os.urandom(9000),
    "sub/empty": b"",
    "sub/same-as-a.txt": b"alpha\n" * 100,
    **MANY,
}
EXECUTABLE = {"run.sh"}


def write_tree(root: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if rel in EXECUTABLE else 0o644)
    return root


def snapshot(root: pathlib.Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its bytes and permission bits (links followed)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def expected(files: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
    return {rel: (data, 0o755 if rel in EXECUTABLE else 0o644) for rel, data in files.items()}


def leftovers(folder: pathlib.Path) -> list[str]:
    """Temp files or folders a cache operation left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if ".pivot-" in p.name or "blob." in p.name)


def interrupt(*args) -> None:
    raise KeyboardInterrupt


def objects(cache: LocalCache) -> list[pathlib.Path]:
    return [p for p in cache.objects.rglob("*") if p.is_file()]


def assert_rows_are_current(rows, root: pathlib.Path) -> None:
    """Each stat-cache row `add_output` returned pairs a file with its current stat."""
    for path, size, mtime, inode, ctime, _ in rows:
        st = (root / path).stat()
        assert (size, mtime, inode, ctime) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
            st.st_ctime_ns,
        )
