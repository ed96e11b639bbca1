"""Property tests of the path validator and the decoders that read paths and modes.

Whatever string a lock file, manifest or run record holds, it is refused with a
PivotError or names a path inside the project that is not `.pivot/...` and lies in no
`.git` folder, in any letter case, nor in any name macOS or Windows open as those
(ignorable code points, trailing dots and spaces, a stream suffix, an 8.3 short name),
nor in a folder Python reads without being asked. A manifest yields modes 0o644 and
0o755 only, and no entry twice or both as a file and a folder.
"""

from __future__ import annotations

import json
import pathlib
import re

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pivot.cache.hashing import decode_tree
from pivot.cache.runs import decode_record
from pivot.errors import PivotError
from pivot.project import safe_relpath
from pivot.run.lockfile import parse_lock

HASH = "ab" * 32

# Code points HFS+ ignores in names (a sample of Unicode's Default_Ignorable_Code_Point).
IGNORABLE = ["\u200c", "\u200d", "\u200e", "\u202a", "\u206f", "\ufeff", "\u00ad", "\U000e0001"]


def _decorated(name: str, draw_case, ignorable: list[str], tail: str, stream: str) -> str:
    """`name` as macOS or Windows would still open it: letters in any case, ignorable
    code points anywhere, trailing dots or spaces, an NTFS stream suffix."""
    chars = [c.upper() if up else c for c, up in zip(name, draw_case, strict=False)]
    for i, ch in enumerate(ignorable):
        chars.insert(i % (len(chars) + 1), ch)
    return "".join(chars) + tail + stream


LOOKALIKES = st.builds(
    _decorated,
    st.sampled_from(
        [".git", ".pivot", "git~1", "pivot~1", "git~12", "site-packages", "__pycache__"]
    ),
    st.lists(st.booleans(), min_size=13, max_size=13),
    st.lists(st.sampled_from(IGNORABLE), max_size=2),
    st.sampled_from(["", ".", " ", ". .", "  "]),
    st.sampled_from(["", ":", "::$INDEX_ALLOCATION", ":x"]),
)

# Path parts an attacker would try, mixed with arbitrary text.
PARTS = st.one_of(
    st.sampled_from(
        [".git", ".GIT", ".Git", ".pivot", ".PIVOT", "..", ".", "", "a", "b\\c", "d\x00", "\ud800"]
    ),
    LOOKALIKES,
    st.text(max_size=8),
)
PATHS = st.one_of(
    st.text(),
    st.builds(
        lambda lead, parts: lead + "/".join(parts),
        st.sampled_from(["", "/", "//"]),
        st.lists(PARTS, min_size=1, max_size=5),
    ),
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> pathlib.Path:
    """A project root (no links in it): where a checked path must resolve to."""
    return tmp_path_factory.mktemp("root").resolve()


def _opened_as(part: str) -> str:
    """The name macOS or Windows opens for `part` (for the decorations tried here)."""
    for ch in IGNORABLE:
        part = part.replace(ch, "")
    return part.split(":")[0].rstrip(". ").casefold()


def assert_safe(root: pathlib.Path, rel: str) -> None:
    resolved = (root / rel).resolve()
    assert root in resolved.parents, rel
    folded = [_opened_as(part) for part in rel.split("/")]
    assert folded[0] != ".pivot" and not re.fullmatch(r"pivot~\d+", folded[0]), rel
    assert ".git" not in folded and not any(re.fullmatch(r"git~\d+", p) for p in folded), rel
    assert not {"site-packages", "dist-packages", "__pycache__"} & set(folded), rel


@given(PATHS)
def test_the_validator_refuses_or_returns_a_path_inside_the_project(root, rel):
    try:
        checked = safe_relpath(rel, "a fuzzed path")
    except PivotError as exc:
        assert "a fuzzed path" in str(exc)
        return
    assert checked == rel
    assert_safe(root, checked)


def _packed(value: object) -> bytes:
    return msgpack.packb(value, unicode_errors="surrogatepass")


ROWS = st.lists(
    st.tuples(
        PATHS,
        st.one_of(st.just(HASH), st.text(max_size=70)),
        st.integers(min_value=0, max_value=2**40),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
    ),
    max_size=4,
)


@given(ROWS)
def test_a_manifest_yields_safe_paths_and_plain_modes(root, rows):
    try:
        entries = decode_tree(msgpack.packb(rows, unicode_errors="surrogatepass"), "fuzzed")
    except PivotError:
        return
    for entry in entries:
        assert_safe(root, entry.relpath)
        assert entry.mode in (0o644, 0o755)


# Any msgpack value: the shapes a damaged or crafted manifest may take.
VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        PATHS,
        st.binary(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.one_of(st.binary(max_size=64), VALUES.map(_packed)))
def test_any_bytes_as_a_manifest_are_refused_or_valid(root, data):
    try:
        entries = decode_tree(data, "fuzzed")
    except PivotError:
        return
    for entry in entries:
        assert_safe(root, entry.relpath)
        assert entry.mode in (0o644, 0o755)


@given(
    st.dictionaries(PATHS, st.just(HASH), max_size=3),
    st.dictionaries(PATHS, st.just(HASH), max_size=3),
)
def test_a_lock_file_names_only_safe_paths(root, outs, deps):
    text = json.dumps(
        {
            "schema": 1,
            "stage": "p/s",
            "run_key": HASH,
            "fingerprint": {},
            "params": {},
            "deps": deps,
            "outs": {p: {"hash": h, "size": 1, "kind": "file"} for p, h in outs.items()},
        }
    )
    try:
        lock = parse_lock(text, root / "fuzzed.lock")
    except PivotError as exc:
        assert "fuzzed.lock" in str(exc)
        return
    for rel in [*lock.outs, *lock.deps]:
        assert_safe(root, rel)


@given(st.dictionaries(PATHS, st.just([HASH, 1, "file"]), max_size=3))
def test_a_run_record_names_only_safe_paths(root, outs):
    try:
        decoded = decode_record(
            msgpack.packb({"v": 1, "outs": outs}, unicode_errors="surrogatepass"), "fuzzed record"
        )
    except PivotError:
        return
    for rel in decoded:
        assert_safe(root, rel)
