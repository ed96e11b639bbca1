"""Fingerprints of live stage functions: parts found through globals, closures, classes."""

from __future__ import annotations

import os
import shutil

import pytest
from fp_support import HELPERS, PIPELINE, changed, load, parts_of, write

from pivot import fingerprint as fp


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


def test_body_change_names_the_stage(project):
    before = parts_of(project)
    write(project, "pipeline.py", PIPELINE.replace("> THRESHOLD", ">= THRESHOLD"))
    after = parts_of(project)
    assert changed(before, after) == {"func:stage"}
    assert fp.fingerprint_digest(before) != fp.fingerprint_digest(after)


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
    # The source, and the value of the class attribute as the class statement made it.
    assert changed(before, parts_of(root)) == {"class:params.Params", "const:params.Params.alpha"}


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


def test_in_process_cache_sees_edits_of_reloaded_modules(project):
    before = fp.fingerprint(load(project).stage, project)
    write(project, "helpers.py", HELPERS.replace("row.strip()", "row"))
    path = project / "helpers.py"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = fp.fingerprint(load(project, fresh=False).stage, project)
    assert changed(before, after) == {"func:helpers.clean"}


def test_not_a_function_is_refused(root):
    with pytest.raises(TypeError, match="not a Python function"):
        fp.fingerprint(len, root)
