"""Third-party code counts as its distribution's version; the standard library as nothing."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

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
