"""The fingerprint index cache (`.pivot/tmp/fingerprint/*.idx`) is untrusted input: a
repository can commit such files. Bytes that are not exactly a current record are treated as
absent and rewritten (the fingerprint stays what the source gives), and the decoder is safe
on any bytes."""

from __future__ import annotations

import json
import marshal
import math
import pathlib

import blake3
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import COUNTER, executions, write_files

from pivot.fingerprint import canonical_json, index_cache
from pivot.fingerprint.normal_ast import Const, Entry, Import

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIGEST = "ab" * 32
CACHE = ".pivot/tmp/fingerprint"

PIPELINE = (
    """
from typing import Annotated

import pivot
"""
    + COUNTER
    + """

pipeline = pivot.Pipeline("p")


def train() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    _count("train")
    return "trained"


pipeline.register(train)
"""
)


def _planted(source: bytes) -> dict[str, bytes]:
    """Crafted contents for the index file of pipeline.py (content digest of `source`)."""
    digest = blake3.blake3(source).hexdigest()
    lines = source.decode().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith("def train("))
    lying = ("func", "train", "train", "0" * 64, (), (), (line,), 0, ())
    header = json.dumps({"format": index_cache.FORMAT, "python": index_cache.PY_TAG})[:-1]
    return {
        # The format this cache had before: marshal, which is unsafe on untrusted bytes.
        "marshal record": marshal.dumps((2, index_cache.PY_TAG, digest, (lying,), ())),
        "garbage": b"\x00\xffgarbage",
        "wrong types": (
            header + f',"digest":"{digest}","entries":[[1,2,3]],"bindings":[]}}'
        ).encode(),
        "deep nesting": (header + f',"digest":"{digest}","entries":' + "[" * 100_000).encode(),
        "foreign literal": (
            header + f',"digest":"{digest}","entries":[],'
            '"bindings":[["const","train","x",true,{"object":"os.system"},[]]]}'
        ).encode(),
    }


def test_planted_index_files_are_ignored_and_rewritten(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    lock_path = project / ".pivot/stages/p/train.lock"
    clean = json.loads(lock_path.read_text())["fingerprint"]
    source = (project / "pipeline.py").read_bytes()
    idx = pathlib.Path(index_cache.cache_file(str(project / CACHE), str(project / "pipeline.py")))
    assert idx.is_file()
    good = idx.read_bytes()

    for name, data in _planted(source).items():
        idx.write_bytes(data)
        # The full no-op, which fingerprints (a replay from the verdict memo reads no index).
        (project / ".pivot/tmp/verdict.msgpack").unlink(missing_ok=True)
        result = pivot("run")
        assert "Every stage is up to date" in result.stdout, (name, result.stdout)
        assert json.loads(lock_path.read_text())["fingerprint"] == clean, name
        assert idx.read_bytes() == good, name  # rewritten from the source
    assert executions(project) == ["train"]


def test_index_record_round_trips(tmp_path) -> None:
    entries = [
        Entry("func", "f", "f", DIGEST, ("a.b",), ("x",), (3, 2), 0, (Import("m", "m", "", 0),)),
        Entry("class", "C", "C", DIGEST, (), (), (9,), 0, ()),
    ]
    bindings = [
        Import("*", "pkg", "*", 1),
        Const("A", DIGEST, True, (1, [2.5, {b"\x00"}], {3: None, "k": ...}, -0j), ()),
        Const("B", DIGEST, False, None, ("make",)),
    ]
    index_cache.store(str(tmp_path), "/src/mod.py", DIGEST, entries, bindings)
    assert index_cache.load(str(tmp_path), "/src/mod.py", DIGEST) == (entries, bindings)
    assert index_cache.load(str(tmp_path), "/src/mod.py", "cd" * 32) is None  # source edited


def _index_is_valid(found) -> None:
    """`decode` gave None or an index of the types its users rely on."""
    if found is None:
        return
    entries, bindings = found
    for e in entries:
        assert type(e) is Entry and e.kind in ("func", "class") and e.lines
        assert all(type(x) is str for x in (e.match, e.qualname, e.digest, *e.header, *e.body))
        assert all(type(x) is int for x in (*e.lines, e.col))
        assert all(type(i) is Import for i in e.imports)
    for b in bindings:
        assert type(b) in (Import, Const)
        if type(b) is Const and b.is_literal:
            canonical_json(b.literal)  # a value the fingerprint can encode


@FUZZ
@given(st.binary(max_size=300))
@example(b"[" * 100_000)
@example(marshal.dumps((3, index_cache.PY_TAG, DIGEST, (), ())))
def test_decoder_is_safe_on_any_bytes(data: bytes) -> None:
    _index_is_valid(index_cache.decode(data, DIGEST))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(FUZZ, max_examples=100)
@given(
    entries=st.lists(st.lists(json_values, max_size=10), max_size=3),
    bindings=st.lists(
        st.tuples(st.sampled_from(["import", "const", "x"]), st.lists(json_values, max_size=6)),
        max_size=3,
    ),
)
def test_decoder_is_safe_on_records_of_any_content(entries, bindings) -> None:
    record = {
        "format": index_cache.FORMAT,
        "python": index_cache.PY_TAG,
        "digest": DIGEST,
        "entries": entries,
        "bindings": [[kind, *rest] for kind, rest in bindings],
    }
    _index_is_valid(index_cache.decode(json.dumps(record).encode(), DIGEST))


literals = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.complex_numbers(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.just(...),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.sets(st.integers() | st.text(max_size=4), max_size=4)
        | st.dictionaries(st.integers() | st.text(max_size=4) | st.binary(max_size=4), inner)
    ),
    max_leaves=20,
)


@FUZZ
@given(literals)
def test_every_literal_keeps_its_canonical_text(value) -> None:
    """A constant read from the cache hashes as the value `ast.literal_eval` gave."""
    const = Const("A", DIGEST, True, value, ())
    found = index_cache.decode(index_cache.encode(DIGEST, [], [const]), DIGEST)
    assert found is not None
    (back,) = found[1]
    assert canonical_json(back.literal) == canonical_json(value)
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(back.literal)
