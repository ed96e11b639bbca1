"""Property-based fuzzing of the pipeline scan's index read back from the state db
(`decode_index`): any bytes give either None (a rescan) or an index whose every path is
one the scan could have listed, never an exception; an index as the scan writes it is
read back whole."""

from __future__ import annotations

import msgpack
from fuzz_support import anything
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pivot.discover.finder import SKIP_DIRS, decode_index
from pivot.discover.loading import PIPELINE_FILES
from pivot.project import safe_relpath

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

paths = st.sampled_from(
    [
        ".",
        "a",
        "a/b",
        "pipeline.py",
        "a/pipeline.py",
        "a/pivot.yaml",
        "../pipeline.py",
        "/etc/pipeline.py",
        "a/../pipeline.py",
        ".git/pipeline.py",
        ".hidden/pipeline.py",
        "venv/pipeline.py",
        "a//pipeline.py",
        "a/pipeline.py\0",
        "./pipeline.py",
        "x.py",
        "",
    ]
) | st.text(max_size=12)
outs = st.lists(paths, max_size=3) | st.text(max_size=20) | anything
numbers = (
    st.sampled_from([0, 1, -1, 2**63, 2**64 - 1, -(2**63) - 1, True]) | st.integers() | anything
)
index_shaped = st.fixed_dictionaries(
    {
        "dirs": st.dictionaries(paths, numbers, max_size=4) | anything,
        "files": st.dictionaries(
            paths, st.lists(numbers | outs, min_size=2, max_size=4) | anything, max_size=3
        )
        | anything,
        "stages": st.dictionaries(st.text(max_size=8) | paths, outs, max_size=3) | anything,
    },
    optional={"extra": anything},
)
GOOD = {
    "dirs": {".": 1, "a": 2, "a/b": 3},
    "files": {"pipeline.py": [4, 5, ["out.txt"]], "a/b/pivot.yaml": [6, 7, "it failed"]},
    "stages": {"p/make": ["out.txt"], "q/s": []},
}


def _scannable(rel: str) -> bool:
    parts = rel.split("/")
    return all(p and p[0] != "." and p not in SKIP_DIRS for p in parts) and "\0" not in rel


def _check(raw: object) -> None:
    decoded = decode_index(raw)
    if decoded is None:
        return
    dirs, files, stages = decoded
    assert "." in dirs
    for rel, mtime in dirs.items():
        assert rel == "." or _scannable(rel), rel
        assert type(mtime) is int
    for rel, (mtime, size, found) in files.items():
        assert _scannable(rel) and rel.rsplit("/", 1)[-1] in PIPELINE_FILES, rel
        assert (rel.rpartition("/")[0] or ".") in dirs, rel
        assert type(mtime) is int and type(size) is int and size >= 0
        if not isinstance(found, str):
            for out in found:
                safe_relpath(out, "a fuzzed output")
    for stage, found in stages.items():
        assert type(stage) is str and stage
        for out in found:
            safe_relpath(out, "a fuzzed output")


@FUZZ
@given(index_shaped)
@example(GOOD)
@example({**GOOD, "files": {"../pipeline.py": [4, 5, []]}})
@example({**GOOD, "files": {"c/pipeline.py": [4, 5, []]}})  # c is no scanned folder
@example({**GOOD, "files": {"pipeline.py": [4, -5, []]}})
@example({**GOOD, "files": {"pipeline.py": [4, 5, ["../x"]]}})
@example({**GOOD, "stages": {"p/make": [".pivot/state.db"]}})
@example({**GOOD, "dirs": {".": 1, "a/b": 3}})  # a folder whose parent is not listed
def test_index_shaped(body: dict) -> None:
    try:
        raw = msgpack.packb(body, use_bin_type=True)
    except (ValueError, TypeError, OverflowError):
        return  # not encodable: cannot be in the db either
    _check(raw)


@FUZZ
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xc1")
@example(b"\x91" * 10_000)  # nested arrays, deeper than the decoder's stack
@example(msgpack.packb({1: 2}))
@example(msgpack.packb(GOOD) + b"\x00")  # trailing bytes
def test_index_any_bytes(raw: bytes) -> None:
    _check(raw)


@FUZZ
@given(st.binary(min_size=1, max_size=8), st.integers(min_value=0))
def test_index_damaged(noise: bytes, at: int) -> None:
    good = msgpack.packb(GOOD, use_bin_type=True)
    at %= len(good)
    _check(good[:at] + noise + good[at + len(noise) :])
    _check(good[:at])


def test_an_index_as_the_scan_writes_it_reads_back_whole() -> None:
    dirs, files, stages = decode_index(msgpack.packb(GOOD, use_bin_type=True))
    assert dirs == GOOD["dirs"] and stages == GOOD["stages"]
    assert files == {"pipeline.py": (4, 5, ["out.txt"]), "a/b/pivot.yaml": (6, 7, "it failed")}


def test_what_is_no_index() -> None:
    assert decode_index(None) is None
    assert decode_index("text") is None
    assert decode_index(msgpack.packb({**GOOD, "dirs": {"a": 1}})) is None  # no root
    assert decode_index(msgpack.packb({**GOOD, "files": {"pipeline.py": [True, 5, []]}})) is None
