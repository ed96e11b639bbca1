"""The memo of what a remote holds (remote/held.py): a push with nothing to send answers
from it, and a corrupt or stale memo falls back to the full check, never to a wrong "up to
date"."""

from __future__ import annotations

import shutil

from remote_support import clone, files_of, make_project, push_all

from pivot.cache.state import StateDB
from pivot.remote import transfer
from pivot.remote.held import HeldMemo, decode_entry, encode_entry
from pivot.remote.index_cache import RemoteIndexCache
from pivot.remote.stores import open_remote

FILES = {f"data/f{i}.txt": f"file {i}\n".encode() * 50 for i in range(20)}
FILES["model.bin"] = b"weights " * 2000
BLOBS = len(FILES) + 1  # every file and the manifest of data/


def _memo_entries(project, remote) -> dict[str, bytes]:
    state = StateDB(project.state_path)
    try:
        memo = HeldMemo(state, RemoteIndexCache(state, remote).tag)
        return dict(state.items(memo.namespace))
    finally:
        state.close()


def _set_memo(project, remote, entries: dict[str, bytes]) -> None:
    state = StateDB(project.state_path)
    try:
        memo = HeldMemo(state, RemoteIndexCache(state, remote).tag)
        for key, value in entries.items():
            state.put(memo.namespace, key, value)
    finally:
        state.close()


def _pulled_files(project, remote, root) -> dict[str, bytes]:
    dst = clone(project, root)
    from pivot.run.lockfile import load_locks

    transfer.pull_locks(dst, remote, load_locks(dst))
    return files_of(dst.root)


def test_a_push_records_what_the_remote_holds_and_the_next_push_answers_from_it(tmp_path):
    project = make_project(tmp_path / "p", FILES, stage="p/s")
    remote = open_remote(str(tmp_path / "remote"), name="test")
    first = push_all(project, remote)
    assert first.blobs == BLOBS
    entries = _memo_entries(project, remote)
    assert entries, "the push recorded nothing"
    assert all(decode_entry(v)[1] for v in entries.values())

    again = push_all(project, remote)
    assert (again.blobs, again.up_to_date, again.missing) == (0, BLOBS, [])


def test_a_corrupt_memo_falls_back_to_the_full_check(tmp_path):
    project = make_project(tmp_path / "p", FILES, stage="p/s")
    remote = open_remote(str(tmp_path / "remote"), name="test")
    push_all(project, remote)
    entries = _memo_entries(project, remote)
    # Not msgpack, not [blobs, ids], no ids, and well formed but naming an index the
    # remote does not have.
    garbage = [
        b"",
        b"\xc1",
        b"\x92\x05\x90",
        b"\x92\xff\x91\xc4\x01x",
        encode_entry(3, ["ab" * 32]),
    ]
    for i, bad in enumerate(garbage):
        _set_memo(project, remote, {key: bad for key in entries})
        summary = push_all(project, remote)
        assert (summary.blobs, summary.up_to_date, summary.missing) == (0, BLOBS, []), i
        # The full check recorded the memo again, correctly.
        assert _memo_entries(project, remote) == entries


def test_a_stale_memo_never_says_up_to_date(tmp_path):
    """The remote lost everything (deleted by hand); once the index cache learns it (any
    fetch or pull refreshes it), the next push sends everything again, though the memo
    still names the deleted index."""
    project = make_project(tmp_path / "p", FILES, stage="p/s")
    remote_dir = tmp_path / "remote"
    remote = open_remote(str(remote_dir), name="test")
    push_all(project, remote)
    shutil.rmtree(remote_dir)
    remote_dir.mkdir()
    assert not transfer.remote_contents(project, remote).index_ids  # a refresh, as fetch does

    summary = push_all(project, remote)
    assert (summary.blobs, summary.missing) == (BLOBS, [])
    assert _pulled_files(project, remote, tmp_path / "dst") == FILES
