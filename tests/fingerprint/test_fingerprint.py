"""Code fingerprints of stage functions, on real modules loaded the way Pivot loads them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
import shutil
import sys
import textwrap

import pytest
from support import ROOT

from pivot import fingerprint as fp

_names = itertools.count()


@pytest.fixture
def root(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    fp.clear_cache()
    before = set(sys.modules)
    yield project
    for name in set(sys.modules) - before:
        if name.startswith("_pivot_pipeline_test_"):
            del sys.modules[name]
    fp.clear_cache()


def write(root, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def load(root, file: str = "pipeline.py", fresh: bool = True):
    """Import like Pivot: synthetic module name, its folder on sys.path, helpers dropped after.

    `fresh` forgets the fingerprint caches, as a new `pivot` process would.
    """
    if fresh:
        fp.clear_cache()
    before = set(sys.modules)
    name = f"_pivot_pipeline_test_{next(_names)}"
    spec = importlib.util.spec_from_file_location(name, root / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str((root / file).parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str((root / file).parent))
        for added in set(sys.modules) - before:
            file_of = getattr(sys.modules[added], "__file__", None) or ""
            if file_of.startswith(str(root)) and added != name:
                del sys.modules[added]
    return module


def parts_of(root, stage: str = "stage", file: str = "pipeline.py") -> dict[str, str]:
    return fp.fingerprint(getattr(load(root, file), stage), root)


def changed(old: dict[str, str], new: dict[str, str]) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


PIPELINE = textwrap.dedent(
    """\
    import helpers
    from helpers import clean

    THRESHOLD = 3


    def stage(rows):
        \"\"\"Keep the long rows.\"\"\"
        kept = [clean(r) for r in rows if len(r) > THRESHOLD]
        return helpers.count(kept)


    def unrelated():
        return 1
    """
)

HELPERS = textwrap.dedent(
    """\
    def clean(row):
        return row.strip()


    def count(rows):
        return _size(rows)


    def _size(rows):
        return len(rows)
    """
)


@pytest.fixture
def project(root):
    write(root, "pipeline.py", PIPELINE)
    write(root, "helpers.py", HELPERS)
    return root


def test_parts_are_named_and_hashed(project):
    parts = parts_of(project)
    assert set(parts) == {
        "func:stage",
        "const:THRESHOLD",
        "func:helpers.clean",
        "func:helpers.count",
        "func:helpers._size",
    }
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in parts.values())
    digest = fp.fingerprint_digest(parts)
    assert len(digest) == 64
    assert fp.fingerprint_digest(dict(reversed(parts.items()))) == digest


def test_same_code_same_parts(project):
    assert parts_of(project) == parts_of(project)


def test_result_is_cached_per_function_and_a_copy(project):
    stage = load(project).stage
    first = fp.fingerprint(stage, project)
    first["func:stage"] = "tampered"
    assert fp.fingerprint(stage, project)["func:stage"] != "tampered"


def test_comments_docstrings_and_formatting_do_not_count(project):
    before = parts_of(project)
    write(
        project,
        "pipeline.py",
        """\
        # A comment at the top.
        import helpers
        from helpers import clean

        THRESHOLD = 3



        def stage(rows):  # the stage
            \"\"\"A different docstring.\"\"\"

            def inner():
                \"\"\"Nested docstrings do not count either.\"\"\"

            kept = [
                clean(r)   for r in rows
                if len(r) > THRESHOLD  # long ones
            ]
            return helpers.count(kept)


        def unrelated():
            return 1
        """,
    )
    after = parts_of(project)
    # Adding the nested def is a real change; remove it and the digest must be equal.
    assert changed(before, after) == {"func:stage"}
    write(
        project,
        "pipeline.py",
        """\
        # A comment at the top.
        import helpers
        from helpers import clean

        THRESHOLD = 3



        def stage(rows):  # the stage
            \"\"\"A different docstring.\"\"\"
            kept = [
                clean(r)   for r in rows
                if len(r) > THRESHOLD  # long ones
            ]
            return helpers.count(kept)
        """,
    )
    assert fp.fingerprint_digest(parts_of(project)) == fp.fingerprint_digest(before)


def test_body_change_names_the_stage(project):
    before = parts_of(project)
    write(project, "pipeline.py", PIPELINE.replace("> THRESHOLD", ">= THRESHOLD"))
    after = parts_of(project)
    assert changed(before, after) == {"func:stage"}
    assert fp.fingerprint_digest(before) != fp.fingerprint_digest(after)


def test_decorator_change_counts(root):
    write(
        root,
        "pipeline.py",
        """\
        import functools

        @functools.lru_cache(maxsize=1)
        def stage():
            return 1
        """,
    )
    before = parts_of(root)
    write(root, "pipeline.py", (root / "pipeline.py").read_text().replace("=1", "=2"))
    assert changed(before, parts_of(root)) == {"func:stage"}


def test_renaming_the_function_keeps_its_hash(root):
    write(root, "pipeline.py", "def stage(x):\n    return x + 1\n")
    before = parts_of(root)
    write(root, "pipeline.py", "def renamed(x):\n    return x + 1\n")
    assert parts_of(root, "renamed") == {"func:renamed": before["func:stage"]}


@pytest.mark.parametrize(
    ("old", "new", "part"),
    [
        ("return row.strip()", "return row.strip().lower()", "func:helpers.clean"),
        ("return _size(rows)", "return _size(rows) + 0", "func:helpers.count"),
        ("return len(rows)", "return len(rows) * 2", "func:helpers._size"),  # transitive
    ],
)
def test_helper_change_in_another_file(project, old, new, part):
    before = parts_of(project)
    write(project, "helpers.py", HELPERS.replace(old, new))
    after = parts_of(project)
    assert changed(before, after) == {part}


def test_helper_in_a_package_and_a_module_attribute_chain(root):
    write(root, "lib/__init__.py", "")
    write(root, "lib/maths.py", "SCALE = 2\n\ndef double(x):\n    return x * SCALE\n")
    write(
        root,
        "pipeline.py",
        """\
        import lib.maths

        def stage(x):
            return lib.maths.double(x) + lib.maths.SCALE
        """,
    )
    before = parts_of(root)
    assert set(before) == {"func:stage", "func:lib.maths.double", "const:lib.maths.SCALE"}
    write(root, "lib/maths.py", "SCALE = 3\n\ndef double(x):\n    return x * SCALE\n")
    assert changed(before, parts_of(root)) == {"const:lib.maths.SCALE"}


def test_module_constant_change(project):
    before = parts_of(project)
    write(project, "pipeline.py", PIPELINE.replace("THRESHOLD = 3", "THRESHOLD = 4"))
    assert changed(before, parts_of(project)) == {"const:THRESHOLD"}


def test_constant_read_by_a_helper_is_qualified(root):
    write(root, "helpers.py", "SCALE = 2\n\ndef scale(x):\n    return x * SCALE\n")
    write(root, "pipeline.py", "from helpers import scale\n\ndef stage(x):\n    return scale(x)\n")
    before = parts_of(root)
    assert "const:helpers.SCALE" in before
    write(root, "helpers.py", "SCALE = 5\n\ndef scale(x):\n    return x * SCALE\n")
    assert changed(before, parts_of(root)) == {"const:helpers.SCALE"}


def test_unrelated_function_in_the_same_file(project):
    before = parts_of(project)
    write(project, "pipeline.py", PIPELINE.replace("return 1", "return 2"))
    assert parts_of(project) == before


def test_local_variable_shadowing_a_global_adds_nothing(root):
    write(
        root,
        "pipeline.py",
        """\
        LIMIT = 3

        def stage(LIMIT):
            return [LIMIT for LIMIT in range(LIMIT)]
        """,
    )
    assert set(parts_of(root)) == {"func:stage"}


def test_mutual_recursion_terminates(root):
    write(
        root,
        "pipeline.py",
        """\
        from helpers import is_even

        def stage(n):
            return is_even(n)
        """,
    )
    write(
        root,
        "helpers.py",
        """\
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)
        """,
    )
    parts = parts_of(root)
    assert {"func:helpers.is_even", "func:helpers.is_odd"} <= set(parts)


def test_self_recursive_stage(root):
    write(root, "pipeline.py", "def stage(n):\n    return 1 if n < 2 else n * stage(n - 1)\n")
    assert set(parts_of(root)) == {"func:stage"}


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
    monkeypatch.setattr(fp, "_dist_from_site", lambda site, top: [])
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


def test_pivot_itself_adds_nothing(root):
    write(
        root,
        "pipeline.py",
        """\
        import pivot
        from pivot import fingerprint

        pipeline = pivot.Pipeline("p")

        @pipeline.register
        def stage() -> None:
            fingerprint.clear_cache
        """,
    )
    assert set(parts_of(root)) == {"func:stage"}


def test_class_method_change(root):
    model = """\
        class Base:
            def scale(self):
                return 1


        class Model(Base):
            \"\"\"A model.\"\"\"

            def predict(self, x):
                return x * self.scale()
        """
    write(root, "models.py", model)
    write(
        root,
        "pipeline.py",
        """\
        from models import Model

        def stage(x):
            return Model().predict(x)
        """,
    )
    before = parts_of(root)
    assert set(before) == {"func:stage", "class:models.Model", "class:models.Base"}
    write(root, "models.py", model.replace("x * self", "x + self"))
    assert changed(before, parts_of(root)) == {"class:models.Model"}
    write(root, "models.py", model.replace("return 1", "return 2"))
    assert changed(before, parts_of(root)) == {"class:models.Base"}


def test_class_without_methods_in_a_dropped_module(root):
    """Pivot drops helper modules from sys.modules after loading: a dataclass must be found."""
    params = """\
        from dataclasses import dataclass

        @dataclass
        class Params:
            alpha: float = 0.5
        """
    write(root, "params.py", params)
    write(
        root,
        "pipeline.py",
        """\
        from params import Params

        def stage(params: Params) -> float:
            return params.alpha
        """,
    )
    before = parts_of(root)
    assert "class:params.Params" in before
    write(root, "params.py", params.replace("0.5", "0.7"))
    assert changed(before, parts_of(root)) == {"class:params.Params"}


def test_constants_of_many_kinds(root):
    write(
        root,
        "pipeline.py",
        """\
        import enum
        import pathlib
        import re
        from dataclasses import dataclass

        class Mode(enum.Enum):
            FAST = 1
            SLOW = 2

        @dataclass(frozen=True)
        class Config:
            n: int
            tags: frozenset

        MODE = Mode.FAST
        CONFIG = Config(3, frozenset({"b", "a"}))
        PATTERN = re.compile(r"\\d+")
        DATA = pathlib.Path(__file__).parent / "data.csv"
        TABLE = {"k": [1, 2.5, None, (True, b"x")]}

        def stage():
            return MODE, CONFIG, PATTERN, DATA, TABLE
        """,
    )
    parts = parts_of(root)
    assert {"const:MODE", "const:CONFIG", "const:PATTERN", "const:DATA", "const:TABLE"} <= set(
        parts
    )
    assert {"class:Mode", "class:Config"} <= set(parts)
    write(root, "pipeline.py", (root / "pipeline.py").read_text().replace("2.5", "3.5"))
    assert changed(parts, parts_of(root)) == {"const:TABLE"}


def test_objects_without_a_stable_form_are_marked_untracked(root):
    write(
        root,
        "pipeline.py",
        """\
        class Thing:
            pass

        THING = Thing()
        LOCK = __import__("threading").Lock()

        def stage():
            return THING, LOCK
        """,
    )
    parts = parts_of(root)
    assert set(parts) == {"func:stage", "class:Thing", "const:THING", "const:LOCK"}
    assert fp.untracked_parts(parts) == ["const:LOCK"]
    assert parts["const:LOCK"].startswith(fp.UNTRACKED)
    assert parts_of(root) == parts  # the marker holds no address: stable across processes
    # Its source expression still counts.
    text = (root / "pipeline.py").read_text()
    write(root, "pipeline.py", text.replace(".Lock()", ".RLock()"))
    assert changed(parts, parts_of(root)) == {"const:LOCK"}


def test_dispatch_table_of_functions(root):
    write(
        root,
        "pipeline.py",
        """\
        def a():
            return 1

        def b():
            return 2

        HANDLERS = {"a": a, "b": b}

        def stage(key):
            return HANDLERS[key]()
        """,
    )
    before = parts_of(root)
    assert {"const:HANDLERS", "func:a", "func:b"} <= set(before)
    write(root, "pipeline.py", (root / "pipeline.py").read_text().replace("return 2", "return 3"))
    assert changed(before, parts_of(root)) == {"func:b"}


def test_module_level_lambda(root):
    write(root, "pipeline.py", "square = lambda x: x * x\n\ndef stage(x):\n    return square(x)\n")
    before = parts_of(root)
    assert set(before) == {"func:stage", "func:square"}
    write(root, "pipeline.py", "square = lambda x: x ** 2\n\ndef stage(x):\n    return square(x)\n")
    assert changed(before, parts_of(root)) == {"func:square"}


def test_closure_stage_from_a_factory(root):
    write(
        root,
        "pipeline.py",
        """\
        def make(n):
            def stage(x):
                return x + n
            return stage

        ONE = make(1)
        TWO = make(2)
        """,
    )
    one = parts_of(root, "ONE")
    two = fp.fingerprint(load(root).TWO, root)
    assert set(one) == {"func:make.<locals>.stage", "closure:make.<locals>.stage.n"}
    assert changed(one, two) == {"closure:make.<locals>.stage.n"}


def test_factory_defaults_count(root):
    write(
        root,
        "pipeline.py",
        """\
        def make(n):
            def stage(x, k=n):
                return x + k
            return stage

        ONE = make(1)
        TWO = make(2)
        """,
    )
    module = load(root)
    one, two = fp.fingerprint(module.ONE, root), fp.fingerprint(module.TWO, root)
    assert changed(one, two) == {"closure:make.<locals>.stage.__defaults__"}


def test_wrapped_stage_and_project_decorator(root):
    write(
        root,
        "decorators.py",
        """\
        import functools

        def logged(func):
            @functools.wraps(func)
            def wrapper(*args):
                return func(*args)
            return wrapper
        """,
    )
    write(
        root,
        "pipeline.py",
        "from decorators import logged\n\n@logged\ndef stage(x):\n    return x\n",
    )
    parts = parts_of(root)
    assert {"func:stage", "func:decorators.logged", "func:decorators.logged.<locals>.wrapper"} <= (
        set(parts)
    )


def test_stage_in_a_subdirectory_pipeline(root):
    write(root, "sub/helpers.py", "def clean(x):\n    return x\n")
    write(
        root, "sub/pipeline.py", "from helpers import clean\n\ndef stage(x):\n    return clean(x)\n"
    )
    assert set(parts_of(root, file="sub/pipeline.py")) == {"func:stage", "func:sub.helpers.clean"}


def test_no_absolute_paths_and_identical_in_a_clone(project, tmp_path):
    write(project, "pipeline.py", PIPELINE + "\nHERE = __file__\n\ndef where():\n    return HERE\n")
    parts = parts_of(project)
    where = parts_of(project, "where")
    clone = tmp_path / "elsewhere" / "clone"
    shutil.copytree(project, clone)
    assert parts_of(clone) == parts
    assert parts_of(clone, "where") == where
    for text in [*parts, *parts.values(), *where]:
        assert str(project) not in text and str(tmp_path) not in text


def test_disk_index_makes_a_new_process_skip_parsing(project, monkeypatch):
    (project / ".pivot").mkdir()
    before = parts_of(project)
    stored = list((project / ".pivot" / "tmp" / "fingerprint").iterdir())
    assert len(stored) == 2  # pipeline.py and helpers.py

    def no_parse(source):
        raise AssertionError("parsed although the disk index is current")

    monkeypatch.setattr(fp, "_parse", no_parse)
    assert parts_of(project) == before  # parts_of clears the in-memory caches first
    monkeypatch.undo()
    write(project, "helpers.py", HELPERS.replace("row.strip()", "row"))
    assert changed(before, parts_of(project)) == {"func:helpers.clean"}


def test_corrupt_disk_index_is_ignored(project):
    (project / ".pivot").mkdir()
    before = parts_of(project)
    for path in (project / ".pivot" / "tmp" / "fingerprint").iterdir():
        path.write_bytes(b"\x00garbage")
    assert parts_of(project) == before


def test_in_process_cache_sees_edits_of_reloaded_modules(project):
    before = fp.fingerprint(load(project).stage, project)
    write(project, "helpers.py", HELPERS.replace("row.strip()", "row"))
    path = project / "helpers.py"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = fp.fingerprint(load(project, fresh=False).stage, project)
    assert changed(before, after) == {"func:helpers.clean"}


def test_source_unavailable_falls_back_to_bytecode(root):
    namespace: dict = {}
    exec(compile("def stage(x):\n    return x + 1\n", "<generated>", "exec"), namespace)
    parts = fp.fingerprint(namespace["stage"], root)
    assert set(parts) == {"func:stage"}
    exec(compile("def stage(x):\n    return x + 2\n", "<generated>", "exec"), namespace)
    assert fp.fingerprint(namespace["stage"], root) != parts


def test_not_a_function_is_refused(root):
    with pytest.raises(TypeError, match="not a Python function"):
        fp.fingerprint(len, root)


# --- imports inside function bodies -----------------------------------------------------

ROWS = textwrap.dedent(
    """\
    import helpers

    LIMIT = 3
    open("rows-module-ran", "w").close()  # must never run while fingerprinting


    def make(n=LIMIT):
        return [_one(i) for i in range(n)]


    def _one(i):
        from lib.maths import double
        return helpers.clean(double(i))
    """
)
MATHS = "SCALE = 2\n\n\ndef double(x):\n    return x * SCALE\n"


@pytest.fixture
def local_project(root):
    write(root, "rows.py", ROWS)
    write(root, "helpers.py", HELPERS)
    write(root, "lib/__init__.py", "")
    write(root, "lib/maths.py", MATHS)
    return root


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


def test_disk_index_covers_local_imports(local_project, monkeypatch):
    (local_project / ".pivot").mkdir()
    write(local_project, "pipeline.py", "def stage():\n    import rows\n    return rows.make()\n")
    before = parts_of(local_project)
    assert "func:lib.maths.double" in before

    def no_parse(source):
        raise AssertionError("parsed although the disk index is current")

    monkeypatch.setattr(fp, "_parse", no_parse)
    assert parts_of(local_project) == before


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
    assert set(before) == {"func:stage", "class:params.Params", "const:params.DEFAULT"}
    write(root, "params.py", params.replace("0.5", "0.7"))
    assert changed(before, parts_of(root)) == {"const:params.DEFAULT"}


# --- config objects of plain classes, untracked values, canonical_json -------------------

CFG_PIPELINE = """\
class Cfg:
    def __init__(self, scale, tags=()):
        self.scale = scale
        self.tags = set(tags)

CFG = Cfg(scale=2, tags=["b", "a", "c"])

def stage():
    return f"{CFG.scale}"
"""


def test_plain_config_object_edit_is_detected(root):
    write(root, "pipeline.py", CFG_PIPELINE)
    before = parts_of(root)
    assert {"func:stage", "class:Cfg", "const:CFG"} == set(before)
    assert fp.untracked_parts(before) == []
    write(root, "pipeline.py", CFG_PIPELINE.replace("scale=2", "scale=3"))
    assert changed(before, parts_of(root)) == {"const:CFG"}
    # An attribute changed at import time, not in the expression, counts too.
    write(root, "pipeline.py", CFG_PIPELINE + "CFG.tags.add('d')\n")
    assert changed(before, parts_of(root)) == {"const:CFG"}


def test_plain_config_object_of_a_helper_module(root):
    write(root, "config.py", CFG_PIPELINE.split("\ndef stage")[0])
    write(
        root,
        "pipeline.py",
        """\
        import config
        from config import CFG

        def stage():
            return CFG.scale + config.CFG.scale
        """,
    )
    before = parts_of(root)
    assert {"const:CFG", "const:config.CFG", "class:config.Cfg"} <= set(before)
    write(root, "config.py", (root / "config.py").read_text().replace("scale=2", "scale=3"))
    assert changed(before, parts_of(root)) == {"const:CFG", "const:config.CFG"}


FACTORY = """\
import types

class Settings:
    __slots__ = ("rate", "__secret")

    def __init__(self, rate, secret):
        self.rate = rate
        self.__secret = secret

def make(settings, ns):
    def stage():
        return settings.rate, ns.k
    return stage

STAGE = make(Settings(rate=0.5, secret="s"), types.SimpleNamespace(k={"x", "y"}))
"""


def test_closure_captured_plain_instance_edit_is_detected(root):
    write(root, "pipeline.py", FACTORY)
    before = parts_of(root, "STAGE")
    names = {"closure:make.<locals>.stage.settings", "closure:make.<locals>.stage.ns"}
    assert names <= set(before) and fp.untracked_parts(before) == []
    write(root, "pipeline.py", FACTORY.replace("rate=0.5", "rate=0.7"))
    assert changed(before, parts_of(root, "STAGE")) == {"closure:make.<locals>.stage.settings"}
    write(root, "pipeline.py", FACTORY.replace('"s"', '"t"'))  # a name-mangled slot
    assert changed(before, parts_of(root, "STAGE")) == {"closure:make.<locals>.stage.settings"}
    write(root, "pipeline.py", FACTORY.replace('{"x", "y"}', '{"x", "z"}'))
    assert changed(before, parts_of(root, "STAGE")) == {"closure:make.<locals>.stage.ns"}


def test_cycles_and_cached_properties(root):
    source = """\
        import functools

        class Node:
            def __init__(self, name, parent=None):
                self.name = name
                self.parent = parent
                self.children = []
                if parent is not None:
                    parent.children.append(self)

            @functools.cached_property
            def path(self):
                return (self.parent.path if self.parent else ()) + (self.name,)

        TREE = Node("root")
        LEAF = Node("leaf", Node("mid", TREE))

        def stage():
            return TREE, LEAF.path
        """
    write(root, "pipeline.py", source)
    module = load(root)
    before = fp.fingerprint(module.stage, root)
    assert fp.untracked_parts(before) == []
    fp.clear_cache()
    assert module.LEAF.path == ("root", "mid", "leaf")  # cached in __dict__: not counted
    assert fp.fingerprint(module.stage, root) == before
    write(root, "pipeline.py", source.replace('"leaf"', '"leaf2"'))
    assert changed(before, parts_of(root)) == {"const:TREE", "const:LEAF"}


def test_partly_untracked_value_is_marked_and_still_follows_edits(root):
    source = """\
        import threading

        class Cfg:
            def __init__(self, scale):
                self.scale = scale
                self.lock = threading.Lock()

        CFG = Cfg(scale=2)

        def stage():
            return CFG.scale
        """
    write(root, "pipeline.py", source)
    before = parts_of(root)
    assert fp.untracked_parts(before) == ["const:CFG"]
    assert parts_of(root) == before
    write(root, "pipeline.py", source.replace("scale=2", "scale=3"))
    after = parts_of(root)
    assert changed(before, after) == {"const:CFG"} and fp.untracked_parts(after) == ["const:CFG"]


def test_third_party_object_is_untracked_but_its_expression_counts(root, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "extlib.py").write_text(
        "class Model:\n    def __init__(self, size):\n        self.size = size\n"
    )
    monkeypatch.syspath_prepend(str(site))
    source = """\
        import extlib

        MODEL = extlib.Model(size=3)

        def stage():
            return MODEL.size
        """
    write(root, "pipeline.py", source)
    try:
        before = parts_of(root)
        assert fp.untracked_parts(before) == ["const:MODEL"]
        assert parts_of(root) == before
        write(root, "pipeline.py", source.replace("size=3", "size=4"))
        assert changed(before, parts_of(root)) == {"const:MODEL"}
    finally:
        sys.modules.pop("extlib", None)


def test_untracked_marker_survives_two_values_of_one_part():
    parts = {"const:A": "1" * 64, "const:B": fp.UNTRACKED + "2" * 64}
    assert fp.untracked_parts(parts) == ["const:B"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({1: "x"}, {"1": "x"}),
        ((1, 2), [1, 2]),
        (1, 1.0),
        (1, "1"),
        (True, 1),
        (frozenset({1}), {1}),
        ({"a": [1]}, {"dict": [["a", [1]]]}),
        (0.1 + 0.2, 0.3),
    ],
)
def test_canonical_json_keeps_values_apart(a, b):
    assert fp.canonical_json(a) != fp.canonical_json(b)


def test_canonical_json_names_functions_loaders_and_objects():
    import dataclasses
    import json

    from pivot.define import loaders

    @dataclasses.dataclass(frozen=True)
    class Cleaned(loaders.Loader):
        clean: object = str.strip
        helper: object = write

    text = fp.canonical_json(Cleaned())
    assert "0x" not in text and json.loads(text)
    assert fp.canonical_json(Cleaned()) == text
    assert "tests.test_fingerprint.write" in text or "test_fingerprint.write" in text
    assert fp.canonical_json(loaders.Text()) != fp.canonical_json(loaders.Text("latin-1"))
    assert fp.canonical_json({"b": 1, "a": 2}) == fp.canonical_json({"a": 2, "b": 1})

    class Plain:
        def __init__(self):
            self.me = self
            self.values = {3, 1, 2}

    assert "backref" in fp.canonical_json(Plain())


def test_canonical_json_refuses_values_without_a_stable_form():
    import threading

    with pytest.raises(TypeError, match=r"value\['a'\]\[0\] \(_thread\.lock\)"):
        fp.canonical_json({"a": [threading.Lock()]})


def test_canonical_json_is_the_same_under_any_hash_seed(tmp_path):
    import subprocess

    probe = (
        "import dataclasses, sys; sys.path.insert(0, sys.argv[1]);"
        "from pivot.fingerprint import canonical_json;"
        "cols = frozenset(f'col{i}' for i in range(30));"
        "print(canonical_json({'cols': cols, 'by': {c: {c, c + 'x'} for c in cols}}))"
    )
    root = str(ROOT)
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", probe, root], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        outputs.add(proc.stdout)
    assert len(outputs) == 1
