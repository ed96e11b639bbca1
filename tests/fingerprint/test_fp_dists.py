"""Third-party code counts as its distribution's version; the standard library as nothing."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

import hypothesis
import hypothesis.strategies as st
from fp_support import parts_of, write

from pivot.fingerprint import dists


def test_third_party_is_its_distribution_version(root):
    write(
        root,
        "pipeline.py",
        """\
        import msgpack
        from msgpack import unpackb

        def stage(x):
            return unpackb(msgpack.packb(x))
        """,
    )
    parts = parts_of(root)
    assert parts == {
        "func:stage": parts["func:stage"],
        "dist:msgpack": importlib.metadata.version("msgpack"),
    }


def test_distribution_through_importlib_metadata(root, monkeypatch):
    monkeypatch.setattr(dists, "_dist_from_site", lambda site, top: [])
    write(root, "pipeline.py", "import msgpack\n\ndef stage(x):\n    return msgpack.packb(x)\n")
    assert parts_of(root)["dist:msgpack"] == importlib.metadata.version("msgpack")


def test_stdlib_and_builtins_add_nothing(root):
    write(
        root,
        "pipeline.py",
        """\
        import os
        import os.path
        from collections import Counter
        from math import sqrt

        def stage(a, b):
            return os.path.join(a, b), Counter(a), sqrt(len(b)), print
        """,
    )
    assert set(parts_of(root)) == {"func:stage"}


def test_third_party_local_import_adds_its_distribution(root, monkeypatch):
    monkeypatch.delitem(sys.modules, "msgpack", raising=False)
    write(
        root,
        "pipeline.py",
        """\
        def stage(x):
            import msgpack as mp
            from msgpack import unpackb
            return unpackb(mp.packb(x))

        def unused(x):
            import msgpack
            return x
        """,
    )
    version = importlib.metadata.version("msgpack")
    parts = parts_of(root)
    assert parts == {"func:stage": parts["func:stage"], "dist:msgpack": version}
    assert parts_of(root, "unused")["dist:msgpack"] == version
    assert "msgpack" not in sys.modules  # found, not imported


def test_stdlib_local_import_adds_nothing(root):
    write(
        root,
        "pipeline.py",
        """\
        def stage(a):
            import json
            import collections.abc as cabc
            from os import path
            return json.dumps(a), cabc.Mapping, path.join(a)
        """,
    )
    assert set(parts_of(root)) == {"func:stage"}


def test_the_version_and_its_file_come_from_metadata(tmp_path, monkeypatch):
    """The METADATA's `Version:` header, not the dist-info folder's name; the file read is
    named for the verdict memo (importlib.metadata's path too)."""
    site = tmp_path / "site"
    (site / "pivotfake").mkdir(parents=True)
    (site / "pivotfake" / "__init__.py").write_text("")
    info = site / "pivotfake-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pivotfake\nVersion: 2.5\n\nBody\n")
    monkeypatch.syspath_prepend(str(site))
    dists.clear()
    try:
        assert dists.dists("pivotfake") == [("pivotfake", "2.5")]
        assert dists.metadata_file("pivotfake") == str(info / "METADATA")
        (info / "METADATA").write_text("Name: pivotfake\nVersion: \x00bad\n")
        dists.clear()
        assert dists.dists("pivotfake") == [("pivotfake", "1.0")]  # unreadable: the name's
        monkeypatch.setattr(dists, "_dist_from_site", lambda site, top: [])
        (info / "METADATA").write_text("Name: pivotfake\nVersion: 3.0\n")
        dists.clear()
        assert dists.dists("pivotfake") == [("pivotfake", "3.0")]
        assert dists.metadata_file("pivotfake") == str(info / "METADATA")
    finally:
        dists.clear()
        sys.modules.pop("pivotfake", None)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(head=st.binary(max_size=400), tail=st.binary(max_size=200))
def test_any_metadata_bytes_give_a_short_printable_version_or_none(tmp_path_factory, head, tail):
    path = tmp_path_factory.mktemp("meta") / "METADATA"
    path.write_bytes(head + b"\nVersion:" + tail)
    version = dists._header_version(str(path))
    assert version is None or (0 < len(version) <= 200 and version.isprintable())
