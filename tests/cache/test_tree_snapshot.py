"""Directory snapshots (`cache.snapshot`): a tree whose files' stats are unchanged is settled
by its snapshot; any change a user can make to a file is seen; a damaged, stale or foreign
snapshot means the full check, never a wrong hash; fuzzed snapshot bytes never crash."""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import blake3
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import rewrite_keeping_mtime

from pivot.cache import snapshot
from pivot.cache.hashing import Hasher, PathHash
from pivot.cache.snapshot import NAMESPACE, Snapshot, SnapshotHasher
from pivot.cache.state import StateDB

MARGIN_NS = 50_000_000  # the tests' racy margin: 50 ms instead of 2 s
SETTLE = 0.1  # seconds slept so that every file is older than the margin


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("aaaa")
    (out / "b.txt").write_text("bbbb")
    (out / "sub" / "c.txt").write_text("cccc")
    time.sleep(SETTLE)
    return tmp_path


def _state(root: pathlib.Path) -> StateDB:
    return StateDB(root / "state.db")


def _hash(root: pathlib.Path, state: StateDB | None = None) -> PathHash:
    """The tree hash through a snapshot hasher (a new state db connection each time, as a
    new command would open it)."""
    state = state or _state(root)
    try:
        found = SnapshotHasher(root, state, racy_ns=MARGIN_NS).hash_path("out")
    finally:
        state.close()
    assert found is not None
    return found


def _truth(root: pathlib.Path) -> PathHash:
    """The tree hash computed from the files alone: no stat cache, no snapshot."""
    found = Hasher(root, _NoCache()).hash_path("out")
    assert found is not None
    return found


class _NoCache:
    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        return None

    def record(self, rel: str, st: os.stat_result, digest: str, settled: bool = True) -> None:
        pass


def _stored(root: pathlib.Path) -> Snapshot | None:
    state = _state(root)
    try:
        return snapshot.load(state, "out")
    finally:
        state.close()


def test_unchanged_tree_is_settled_by_its_snapshot_alone(root):
    first = _hash(root)
    assert first == _truth(root)
    assert _stored(root) is not None
    state = _state(root)
    assert _hash(root, state) == first
    assert state._stats is None, "the stat cache was consulted although the snapshot matched"


def test_snapshot_is_not_written_while_a_file_is_recent(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "new.txt").write_text("fresh")
    state = _state(tmp_path)
    try:
        SnapshotHasher(tmp_path, state).hash_path("out")  # the real 2 s margin
    finally:
        state.close()
    assert _stored(tmp_path) is None


def _replace_keeping_mtime(path: pathlib.Path, text: str) -> None:
    """What `cp -p` or `tar -x` does: a new file with the old size and mtime."""
    before = path.stat()
    other = path.with_name(path.name + ".new")
    other.write_text(text)
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)


def _add(out: pathlib.Path) -> None:
    (out / "sub" / "d.txt").write_text("dddd")


def _remove(out: pathlib.Path) -> None:
    (out / "b.txt").unlink()


def _rename(out: pathlib.Path) -> None:
    (out / "b.txt").rename(out / "e.txt")


def _move_between_folders(out: pathlib.Path) -> None:
    (out / "b.txt").rename(out / "sub" / "b.txt")


def _chmod(out: pathlib.Path) -> None:
    (out / "a.txt").chmod(0o755)


def _swap_same_size(out: pathlib.Path) -> None:
    """Two files of the same size exchange names: same set of paths and sizes."""
    (out / "a.txt").rename(out / "tmp")
    (out / "b.txt").rename(out / "a.txt")
    (out / "tmp").rename(out / "b.txt")


def _new_empty_folder(out: pathlib.Path) -> None:
    (out / "empty").mkdir()


@pytest.mark.parametrize(
    "change",
    [
        lambda out: rewrite_keeping_mtime(out / "a.txt", "AAAA"),
        lambda out: _replace_keeping_mtime(out / "sub" / "c.txt", "CCCC"),
        _add,
        _remove,
        _rename,
        _move_between_folders,
        _chmod,
        _swap_same_size,
    ],
    ids=[
        "rewrite-keeping-mtime",
        "replace-keeping-mtime",
        "add",
        "remove",
        "rename",
        "move",
        "chmod",
        "swap",
    ],
)
def test_every_change_to_a_file_is_seen(root, change):
    before = _hash(root)
    _hash(root)  # settled by the snapshot
    change(root / "out")
    after = _hash(root)
    assert after == _truth(root)
    assert after.hash != before.hash
    time.sleep(SETTLE)
    assert _hash(root) == after  # the new snapshot, once the files are old enough


def test_new_empty_folder_changes_nothing(root):
    before = _hash(root)
    _new_empty_folder(root / "out")
    assert _hash(root) == before == _truth(root)


def _blob(root: pathlib.Path, key: str = "out") -> bytes:
    state = _state(root)
    try:
        blob = state.get(NAMESPACE, key)
    finally:
        state.close()
    assert blob is not None
    return blob


def _put(root: pathlib.Path, blob: bytes) -> None:
    state = _state(root)
    try:
        state.put(NAMESPACE, "out", blob)
    finally:
        state.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[: len(blob) // 2],  # truncated
        lambda blob: blob[:-1],
        lambda blob: blob + b"\0",
        lambda blob: blob[:-3] + bytes([blob[-3] ^ 1]) + blob[-2:],  # a bit of a stat flipped
        lambda blob: blob.replace(snapshot.MAGIC, b"pivot-tree-snapshot-9\n"),
        lambda blob: b"",
        lambda blob: b"not a snapshot at all",
    ],
    ids=["half", "short", "long", "bit-flip", "other-version", "empty", "garbage"],
)
def test_damaged_snapshot_means_a_full_check(root, damage):
    truth = _hash(root)
    blob = _blob(root)
    # The tree changes, and the damaged snapshot still names the old hash.
    rewrite_keeping_mtime(root / "out" / "a.txt", "ZZZZ")
    _put(root, damage(blob))
    found = _hash(root)
    assert found == _truth(root) != truth
    time.sleep(SETTLE)
    assert _hash(root) == found
    assert _stored(root) is not None  # written anew


def test_stale_snapshot_of_an_older_tree_is_not_used(root):
    old = _hash(root)
    stale = _blob(root)
    rewrite_keeping_mtime(root / "out" / "b.txt", "XXXX")
    time.sleep(SETTLE)
    new = _hash(root)
    assert new != old
    _put(root, stale)  # the older tree's snapshot comes back (a restored state db)
    assert _hash(root) == new == _truth(root)


def test_snapshot_of_another_folder_is_not_used(root):
    shutil.copytree(root / "out", root / "copy", copy_function=shutil.copy2)
    (root / "copy" / "a.txt").write_text("copy")
    time.sleep(SETTLE)
    state = _state(root)
    try:
        other = SnapshotHasher(root, state, racy_ns=MARGIN_NS).hash_path("copy")
    finally:
        state.close()
    _put(root, _blob(root, "copy"))  # stored under "out"
    assert other is not None
    assert _hash(root) == _truth(root) != other


def test_missing_folder_is_none_and_a_file_is_a_file(root):
    state = _state(root)
    hasher = SnapshotHasher(root, state, racy_ns=MARGIN_NS)
    assert hasher.hash_path("absent") is None
    assert hasher.hash_path("out/a.txt").kind == "file"
    state.close()


# ----- the decoder ---------------------------------------------------------------------


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = snapshot.encode(
    Snapshot("ab" * 32, 12, b"a.txt\0sub/c.txt", bytes(2 * snapshot.FIELDS * snapshot.ITEM))
)


def _check(decoded: Snapshot | None) -> None:
    if decoded is None:
        return
    assert len(decoded.hash) == 64 and int(decoded.hash, 16) >= 0
    assert 0 <= decoded.size < 2**64
    files = len(decoded.stats) // (snapshot.FIELDS * snapshot.ITEM)
    assert len(decoded.stats) % (snapshot.FIELDS * snapshot.ITEM) == 0
    assert (decoded.paths.count(b"\0") + 1 if decoded.paths else 0) == files


@FUZZ
@given(st.binary(max_size=300))
@example(b"")
@example(snapshot.MAGIC)
@example(VALID)
def test_decoder_never_crashes_on_any_bytes(blob):
    _check(snapshot.decode(blob))


@FUZZ
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(1, 255))
def test_decoder_refuses_any_changed_byte(position, flip):
    damaged = bytearray(VALID)
    damaged[position] ^= flip
    assert snapshot.decode(bytes(damaged)) is None


@FUZZ
@given(st.integers(min_value=0, max_value=len(VALID) - 1))
def test_decoder_refuses_any_truncation(length):
    assert snapshot.decode(VALID[:length]) is None


@FUZZ
@given(
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=40),
    st.binary(max_size=200),
)
def test_decoder_refuses_inconsistent_lengths_even_with_a_valid_checksum(
    digest, size, paths, stats
):
    """A snapshot crafted with a correct checksum but lengths that do not add up, or a
    path count that is not the file count, is refused."""
    body = snapshot.HEADER.pack(digest, size, len(paths), len(stats)) + paths + stats
    blob = snapshot.MAGIC + blake3.blake3(body).digest() + body
    decoded = snapshot.decode(blob)
    _check(decoded)
    if decoded is not None:
        assert decoded.paths == paths and decoded.stats == stats and decoded.size == size


def test_round_trip():
    decoded = snapshot.decode(VALID)
    assert decoded == Snapshot("ab" * 32, 12, b"a.txt\0sub/c.txt", bytes(80))


def test_snapshot_is_written_at_once_when_every_file_is_older_than_the_racy_marker(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "new.txt").write_text("fresh")
    (tmp_path / "tmp").mkdir()
    time.sleep(0.05)  # a tick of any coarse file-system clock: the file is before the marker
    state = _state(tmp_path)
    try:
        first = SnapshotHasher(tmp_path, state, marker_dir=str(tmp_path / "tmp")).hash_path("out")
    finally:
        state.close()
    assert (tmp_path / "tmp" / "racy.marker").is_file()
    assert _stored(tmp_path) is not None  # within the 2 s margin, yet written
    rewrite_keeping_mtime(tmp_path / "out" / "new.txt", "FRESH")  # same size and mtime
    state = _state(tmp_path)
    try:
        again = SnapshotHasher(tmp_path, state, marker_dir=str(tmp_path / "tmp")).hash_path("out")
    finally:
        state.close()
    assert again != first and again == _truth(tmp_path)


def test_snapshot_waits_for_the_margin_when_the_racy_marker_does_not_apply(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "new.txt").write_text("fresh")
    time.sleep(0.05)
    shm = pathlib.Path("/dev/shm")
    other = shm / f"pivot-test-{os.getpid()}-{time.time_ns()}"
    places = [str(tmp_path / "absent")]
    if shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev:
        other.mkdir()
        places.append(str(other))  # a marker on another device than the folder
    try:
        for place in places:
            state = _state(tmp_path)
            try:
                SnapshotHasher(tmp_path, state, marker_dir=place).hash_path("out")
            finally:
                state.close()
            assert _stored(tmp_path) is None
    finally:
        if other.exists():
            shutil.rmtree(other)


def test_snapshot_waits_for_the_margin_when_a_link_is_followed(tmp_path):
    # A linked file may live on another file system, of another clock than the marker's.
    (tmp_path / "elsewhere.txt").write_text("fresh")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    (tmp_path / "tmp").mkdir()
    time.sleep(0.05)
    state = _state(tmp_path)
    try:
        SnapshotHasher(tmp_path, state, marker_dir=str(tmp_path / "tmp")).hash_path("out")
    finally:
        state.close()
    assert (tmp_path / "tmp" / "racy.marker").is_file()  # made, but not applied
    assert _stored(tmp_path) is None
