"""What a no-op run at thousands of stages leans on stays exact: a lock file read again in
one process is parsed again whenever it changed (also a same-size rewrite that keeps the
mtime), the memoised loader texts of run keys equal `canonical_json`, and the parameter
names read from a code object equal `inspect.signature`'s."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pivot.define.loaders import CSV, JSON, Loader, PathOnly, Text
from pivot.define.stage import parameter_names
from pivot.fingerprint import canonical_json
from pivot.fingerprint.canonical import loader_text
from pivot.run import lockfile
from pivot.run.lockfile import Lock, all_locks, read_lock, write_lock

A, B, K1, K2 = "a" * 64, "b" * 64, "c" * 64, "d" * 64


def _lock(run_key: str, stage_id: str = "p/s") -> Lock:
    return Lock(
        stage_id=stage_id,
        run_key=run_key,
        fingerprint={"func:s": "1" * 8},
        params={"limit": [1, 2]},
        deps={"raw.txt": B},
        outs={"out.txt": {"hash": A, "size": 5, "kind": "file"}},
    )


@pytest.fixture
def memoised(monkeypatch):
    """Lock files memoised however recently they changed (the racy-file window is for file
    systems with coarse timestamps; a test cannot wait it out cheaply)."""
    monkeypatch.setattr(lockfile, "_RACY_NS", -(10**18))
    monkeypatch.setattr(lockfile, "_READ", {})


def test_a_same_size_rewrite_that_keeps_the_mtime_is_read_again(tmp_path, memoised):
    write_lock(tmp_path, _lock(K1))
    path = tmp_path / "p" / "s.lock"
    assert read_lock(tmp_path, "p/s").run_key == K1
    before = os.stat(path)
    text = path.read_bytes()
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(text.replace(K1.encode(), K2.encode()))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert read_lock(tmp_path, "p/s").run_key == K2


def test_a_lock_replaced_or_removed_is_seen(tmp_path, memoised):
    write_lock(tmp_path, _lock(K1))
    assert read_lock(tmp_path, "p/s").run_key == K1
    write_lock(tmp_path, _lock(K2))
    assert read_lock(tmp_path, "p/s").run_key == K2
    (tmp_path / "p" / "s.lock").write_text("{")
    with pytest.raises(lockfile.CorruptFile):
        read_lock(tmp_path, "p/s")
    (tmp_path / "p" / "s.lock").unlink()
    assert read_lock(tmp_path, "p/s") is None


def test_a_memoised_lock_is_handed_out_as_a_copy(tmp_path, memoised):
    write_lock(tmp_path, _lock(K1))
    first = read_lock(tmp_path, "p/s")
    first.outs["out.txt"]["hash"] = B
    first.params["limit"].append(3)
    first.deps.clear()
    assert read_lock(tmp_path, "p/s") == _lock(K1)


def test_all_locks_lists_nested_lock_files_only(tmp_path):
    for sid in ("p/s", "p-1/s", "p/t", "q/r/s"):
        write_lock(tmp_path, _lock(K1, sid))
    (tmp_path / "p" / "folder.lock").mkdir()
    write_lock(tmp_path / "p" / "folder.lock", _lock(K1, "x"))
    (tmp_path / "p" / "notes.txt").write_text("not a lock")
    found = all_locks(tmp_path)
    assert list(found) == ["p/folder.lock/x", "p/s", "p/t", "p-1/s", "q/r/s"]
    assert found["q/r/s"] == str(tmp_path / "q" / "r" / "s.lock")
    assert all_locks(tmp_path / "absent") == {}


@dataclasses.dataclass(frozen=True)
class Settings(Loader):
    """A user's loader with fields of every kind the memo keys on, and one it does not."""

    a: object = None
    b: object = None


@dataclasses.dataclass(frozen=True)
class ListLoader(list, Loader):  # a dataclass that is also a container
    size: int = 0


PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from(["", "x", "utf-8"]),
    st.sampled_from([0.0, -0.0, 1.0, float("inf")]),
    st.lists(st.integers(min_value=0, max_value=2), max_size=2),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(PLAIN, PLAIN), min_size=1, max_size=6))
def test_loader_texts_equal_canonical_json_in_any_order(values):
    """Equal-looking values of different types (1 / True, 0.0 / -0.0) never share a text."""
    for a, b in values:
        loader = Settings(a, b)
        assert loader_text(loader) == canonical_json(loader)


def test_loader_texts_of_builtin_and_container_loaders():
    for loader in (PathOnly(), Text(), Text("latin-1"), JSON(), JSON(indent=True), CSV()):
        assert loader_text(loader) == canonical_json(loader)
    assert loader_text(JSON(indent=1)) != loader_text(JSON(indent=True))
    one, two = ListLoader(size=1), ListLoader(size=1)
    two.append(5)
    assert loader_text(one) == canonical_json(one)
    assert loader_text(two) == canonical_json(two) != loader_text(one)


def _decorated(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


SIGNATURES = [
    "",
    "a",
    "a, b=1",
    "a, /, b",
    "a, /, b, *, c",
    "*args",
    "**kwargs",
    "a, *args, b, c=2, **kwargs",
    "a, /, *args, **kwargs",
    "*, params, out",
]


@pytest.mark.parametrize("signature", SIGNATURES)
def testparameter_names_follow_inspect_signature(signature):
    scope: dict = {}
    exec(f"def f({signature}):\n    x = 1\n    return x\n", scope)
    names = list(inspect.signature(scope["f"]).parameters)
    assert parameter_names(scope["f"]) == names
    # A nested def that reads every argument moves them into cells.
    exec(f"def f({signature}):\n    def inner():\n        return [{', '.join(names)}]\n", scope)
    func = scope["f"]
    assert set(func.__code__.co_cellvars) == set(names)
    assert parameter_names(func) == names
    wrapped = _decorated(func)
    assert parameter_names(wrapped) == list(inspect.signature(wrapped).parameters)
    partial = functools.partial(func)
    assert parameter_names(partial) == list(inspect.signature(partial).parameters)
