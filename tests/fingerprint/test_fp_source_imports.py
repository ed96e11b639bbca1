"""Imports inside function bodies, followed through source without running modules."""

from __future__ import annotations

import os
import sys

import pytest
from fp_support import HELPERS, MATHS, ROWS, changed, load, parts_of, write

from pivot import fingerprint as fp


def test_local_import_is_followed_without_running_the_module(local_project, monkeypatch):
    monkeypatch.chdir(local_project)
    write(
        local_project,
        "pipeline.py",
        """\
        def stage():
            import rows
            return rows.make()
        """,
    )
    parts = parts_of(local_project)
    assert set(parts) == {
        "func:stage",
        "func:rows.make",
        "const:rows.LIMIT",
        "func:rows._one",
        "func:lib.maths.double",
        "const:lib.maths.SCALE",
        "func:helpers.clean",
    }
    assert "rows" not in sys.modules
    assert not (local_project / "rows-module-ran").exists()
    for old, new, part in [
        ("range(n)", "range(n + 1)", "func:rows.make"),
        ("LIMIT = 3", "LIMIT = 4", "const:rows.LIMIT"),
        ("clean(double(i))", "clean(double(i + 1))", "func:rows._one"),
        ('"w").close()', '"a").close()', None),  # module-level code nothing reads
    ]:
        write(local_project, "rows.py", ROWS.replace(old, new))
        assert changed(parts, parts_of(local_project)) == ({part} if part else set())
    write(local_project, "rows.py", ROWS)
    write(local_project, "lib/maths.py", MATHS.replace("SCALE = 2", "SCALE = 5"))
    assert changed(parts, parts_of(local_project)) == {"const:lib.maths.SCALE"}
    write(local_project, "helpers.py", HELPERS.replace("row.strip()", "row"))
    assert "func:helpers.clean" in changed(parts, parts_of(local_project))


@pytest.mark.parametrize(
    ("imports", "expr"),
    [
        ("import lib.maths", "lib.maths.double(2)"),
        ("import lib.maths as m", "m.double(2)"),
        ("from lib import maths", "maths.double(2)"),
        ("from lib.maths import double", "double(2)"),
        ("from lib.maths import double as twice", "twice(2)"),
    ],
)
def test_each_local_import_form(local_project, imports, expr):
    write(local_project, "pipeline.py", f"def stage():\n    {imports}\n    return {expr}\n")
    parts = parts_of(local_project)
    assert set(parts) == {"func:stage", "func:lib.maths.double", "const:lib.maths.SCALE"}
    write(local_project, "lib/maths.py", MATHS.replace("x * SCALE", "SCALE * x"))
    assert changed(parts, parts_of(local_project)) == {"func:lib.maths.double"}


def test_relative_local_imports_in_a_package(root):
    write(root, "rows.py", "def make():\n    return []\n")
    write(root, "pkg/__init__.py", "VERSION = 1\n")
    write(root, "pkg/util.py", "def helper(x):\n    return x\n")
    write(root, "pkg/sub/__init__.py", "")
    write(root, "pkg/sub/deep.py", "def far(x):\n    return -x\n")
    write(
        root,
        "pkg/stages.py",
        """\
        def stage(x):
            from . import util
            from . import VERSION
            from .sub.deep import far
            from .. import rows
            return util.helper(x), VERSION, far(x), rows.make()
        """,
    )
    parts = parts_of(root, file="pkg/stages.py")
    assert set(parts) == {
        "func:stage",
        "func:pkg.util.helper",
        "const:pkg.VERSION",
        "func:pkg.sub.deep.far",
        "func:rows.make",
    }
    write(root, "pkg/sub/deep.py", "def far(x):\n    return x\n")
    assert changed(parts, parts_of(root, file="pkg/stages.py")) == {"func:pkg.sub.deep.far"}


def test_name_imported_by_a_package_init(root):
    write(root, "pkg/__init__.py", "from .util import helper\n")
    write(root, "pkg/util.py", "def helper(x):\n    return x\n")
    write(root, "pipeline.py", "def stage(x):\n    from pkg import helper\n    return helper(x)\n")
    assert set(parts_of(root)) == {"func:stage", "func:pkg.util.helper"}


def test_local_import_resolves_next_to_the_function(root):
    """Two pipelines with their own rows.py: each stage depends on the one in its folder."""
    stage = "def stage():\n    import rows\n    return rows.make()\n"
    write(root, "rows.py", "def make():\n    return 'root'\n")
    for folder in ("a", "b"):
        write(root, f"{folder}/rows.py", f"def make():\n    return {folder!r}\n")
        write(root, f"{folder}/pipeline.py", stage)
    a = parts_of(root, file="a/pipeline.py")
    b = parts_of(root, file="b/pipeline.py")
    assert set(a) == {"func:stage", "func:a.rows.make"}
    assert set(b) == {"func:stage", "func:b.rows.make"}
    assert a["func:a.rows.make"] != b["func:b.rows.make"]
    write(root, "a/rows.py", "def make():\n    return 'A'\n")
    assert changed(a, parts_of(root, file="a/pipeline.py")) == {"func:a.rows.make"}
    assert parts_of(root, file="b/pipeline.py") == b
    (root / "b" / "rows.py").unlink()  # then the project root's
    assert set(parts_of(root, file="b/pipeline.py")) == {"func:stage", "func:rows.make"}


def test_dropped_module_level_import_and_local_import_agree(local_project):
    """Pivot drops project modules from sys.modules after loading; globals still hold them."""
    write(
        local_project,
        "pipeline.py",
        """\
        import lib.maths

        def stage():
            return lib.maths.double(1) + lib.maths.SCALE

        def local():
            import lib.maths
            return lib.maths.double(1) + lib.maths.SCALE
        """,
    )
    module = load(local_project)
    assert "lib.maths" not in sys.modules and "lib" not in sys.modules
    from_globals = fp.fingerprint(module.stage, local_project)
    from_source = fp.fingerprint(module.local, local_project)
    assert set(from_globals) == {"func:stage", "func:lib.maths.double", "const:lib.maths.SCALE"}
    del from_globals["func:stage"], from_source["func:local"]
    assert from_source == from_globals


def test_local_import_shadows_a_global_of_the_same_name(local_project):
    write(
        local_project,
        "pipeline.py",
        """\
        rows = ["a global that the stage does not read"]

        def stage():
            import rows
            return rows.make
        """,
    )
    assert "const:rows" not in parts_of(local_project)


def test_local_import_in_a_method_and_a_star_import(root):
    write(root, "lib/__init__.py", "from .impl import *\n")
    write(root, "lib/impl.py", "def double(x):\n    return 2 * x\n")
    write(
        root,
        "models.py",
        """\
        class Model:
            def predict(self, x):
                from lib import double
                return double(x)
        """,
    )
    write(
        root,
        "pipeline.py",
        "from models import Model\n\ndef stage(x):\n    return Model().predict(x)\n",
    )
    parts = parts_of(root)
    assert set(parts) == {"func:stage", "class:models.Model", "func:lib.impl.double"}
    write(root, "lib/impl.py", "def double(x):\n    return x + x\n")
    assert changed(parts, parts_of(root)) == {"func:lib.impl.double"}


def test_unresolvable_local_import_adds_nothing(root):
    write(root, "pipeline.py", "def stage():\n    import no_such_module_xyz\n    return 1\n")
    assert set(parts_of(root)) == {"func:stage"}


def test_in_process_cache_sees_edits_behind_local_imports(local_project):
    write(local_project, "pipeline.py", "def stage():\n    import rows\n    return rows.make()\n")
    before = fp.fingerprint(load(local_project).stage, local_project)
    write(local_project, "rows.py", ROWS.replace("range(n)", "range(n + 1)"))
    path = local_project / "rows.py"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = fp.fingerprint(load(local_project, fresh=False).stage, local_project)
    assert changed(before, after) == {"func:rows.make"}


def test_class_of_a_dropped_module_follows_its_source(root):
    """Its module left sys.modules: the names the class reads are found in the source."""
    params = """\
        from dataclasses import dataclass

        DEFAULT = 0.5

        @dataclass
        class Params:
            alpha: float = DEFAULT
        """
    write(root, "params.py", params)
    write(
        root,
        "pipeline.py",
        "from params import Params\n\ndef stage(p: Params) -> float:\n    return p.alpha\n",
    )
    before = parts_of(root)
    assert set(before) == {
        "func:stage",
        "class:params.Params",
        "const:params.DEFAULT",
        "const:params.Params.alpha",
    }
    write(root, "params.py", params.replace("0.5", "0.7"))
    assert changed(before, parts_of(root)) == {"const:params.DEFAULT", "const:params.Params.alpha"}
