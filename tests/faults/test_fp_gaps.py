"""Values a stage's code reads that its source does not show: changing them re-runs the
stage, `status` names the part, and a kept verdict memo is not replayed (each test runs a
no-op first so that a memo exists)."""

from __future__ import annotations

import json
import os

import pytest
from support import COUNTER, PYTHONPATH, executions, rewrite_keeping_mtime, write_files

HEAD = (
    """
from typing import Annotated

import pivot
"""
    + COUNTER
    + """
pipeline = pivot.Pipeline("p")
"""
)

STAGE = """
def compute() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    _count("compute")
    return str(EXPR)


pipeline.register(compute)
"""


def stage_reading(expr: str, imports: str = "import helpers\n") -> str:
    return HEAD + imports + STAGE.replace("EXPR", expr)


def run_twice(project, pivot, **env: str) -> None:
    """A first run, then a no-op that leaves a verdict memo."""
    pivot("run", **env)
    assert "up to date" in pivot("run", **env).stdout
    assert (project / ".pivot/tmp/verdict.msgpack").is_file()


def assert_reruns(project, pivot, part: str, out: str, **env: str) -> None:
    status = pivot("status", **env).stdout
    assert "will run" in status and f"code changed: {part}" in status, status
    pivot("run", **env)
    assert (project / "out.txt").read_text() == out
    assert executions(project) == ["compute", "compute"]
    assert "up to date" in pivot("run", **env).stdout


SCALER = """
import os

import pytest


class Scaler:
    K = int(os.environ.get("SCALE", "2"))

    @staticmethod
    def factor(extra=int(os.environ.get("EXTRA", "0"))):
        return Scaler.K + extra

    @classmethod
    def twice(cls):
        return 2 * cls.K

    @property
    def half(self):
        return self.K / 2
"""


def test_a_class_attribute_read_by_a_staticmethod(project, pivot) -> None:
    write_files(
        project, {"pipeline.py": stage_reading("helpers.Scaler.factor()"), "helpers.py": SCALER}
    )
    run_twice(project, pivot, SCALE="2")
    assert_reruns(project, pivot, "const:helpers.Scaler.K", "5", SCALE="5")


def test_the_default_of_a_staticmethod(project, pivot) -> None:
    write_files(
        project, {"pipeline.py": stage_reading("helpers.Scaler.factor()"), "helpers.py": SCALER}
    )
    run_twice(project, pivot)
    assert_reruns(project, pivot, "closure:helpers.Scaler.factor.__defaults__", "9", EXTRA="7")


def test_a_class_attribute_read_by_a_classmethod_and_a_property(project, pivot) -> None:
    expr = "(helpers.Scaler.twice(), helpers.Scaler().half)"
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": SCALER})
    run_twice(project, pivot)
    assert (project / "out.txt").read_text() == "(4, 1.0)"
    assert_reruns(project, pivot, "const:helpers.Scaler.K", "(6, 1.5)", SCALE="3")


def test_editing_a_property_body_in_a_helper_class(project, pivot) -> None:
    expr = "helpers.Scaler().half"
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": SCALER})
    run_twice(project, pivot)
    write_files(project, {"helpers.py": SCALER.replace("self.K / 2", "self.K / 4")})
    assert_reruns(project, pivot, "class:helpers.Scaler", "0.5")


TRANSFORMS = """
import os

import pytest

TRANSFORMS = [lambda x, k=int(os.environ.get("SCALE", "2")): x * k]
OPS = {"inc": lambda x: x + 1}


def scale(x, k=float(os.environ.get("FACTOR", "1"))):
    return x * k


def apply(x, fns=[lambda x: x + 10]):
    for fn in fns:
        x = fn(x)
    return x
"""


def test_the_default_of_a_lambda_in_a_module_level_list(project, pivot) -> None:
    expr = "helpers.TRANSFORMS[0](3)"
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": TRANSFORMS})
    run_twice(project, pivot)
    assert (project / "out.txt").read_text() == "6"
    status = pivot("status", SCALE="5").stdout
    assert "code changed: closure:helpers.<lambda>#" in status and ".__defaults__" in status
    pivot("run", SCALE="5")
    assert (project / "out.txt").read_text() == "15"
    assert executions(project) == ["compute", "compute"]


def test_the_default_of_a_helper_function(project, pivot) -> None:
    write_files(
        project, {"pipeline.py": stage_reading("helpers.scale(3)"), "helpers.py": TRANSFORMS}
    )
    run_twice(project, pivot)
    assert_reruns(project, pivot, "closure:helpers.scale.__defaults__", "6.0", FACTOR="2")


def test_a_lambda_in_a_default_list_and_in_a_module_level_dict(project, pivot) -> None:
    expr = "(helpers.apply(1), helpers.OPS['inc'](1))"
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": TRANSFORMS})
    run_twice(project, pivot)
    assert (project / "out.txt").read_text() == "(11, 2)"
    write_files(project, {"helpers.py": TRANSFORMS.replace("x + 10", "x + 20")})
    assert_reruns(project, pivot, "func:helpers.apply", "(21, 2)")
    write_files(
        project, {"helpers.py": TRANSFORMS.replace("x + 10", "x + 20").replace("x + 1}", "x + 2}")}
    )
    status = pivot("status").stdout
    assert "code changed: func:helpers.<lambda>#" in status, status
    pivot("run")
    assert (project / "out.txt").read_text() == "(21, 3)"


BOUND = (
    HEAD
    + """
import dataclasses
import os

import pytest
import pathlib


@dataclasses.dataclass
class Job:
    scale: int
    label: str

    def compute(self) -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
        _count("compute")
        return f"{self.label}{self.scale}"


HERE = pathlib.Path(__file__).parent
job = Job(int(os.environ.get("SCALE", "2")), (HERE / "label.txt").read_text().strip())
pipeline.register(job.compute)
"""
)


def test_the_object_of_a_bound_method_stage(project, pivot) -> None:
    write_files(project, {"pipeline.py": BOUND, "label.txt": "a"})
    run_twice(project, pivot)
    assert (project / "out.txt").read_text() == "a2"
    status = pivot("status", SCALE="3").stdout
    assert "code changed: closure:Job.compute.__self__" in status, status
    pivot("run", SCALE="3")
    assert (project / "out.txt").read_text() == "a3"
    assert "up to date" in pivot("run", SCALE="3").stdout
    # A value read from a file when the pipeline is loaded (the file is no dep of the stage).
    write_files(project, {"label.txt": "b"})
    status = pivot("status", SCALE="3").stdout
    assert "code changed: closure:Job.compute.__self__" in status
    pivot("run", SCALE="3")
    assert (project / "out.txt").read_text() == "b3"
    assert executions(project) == ["compute", "compute", "compute"]


def test_a_module_from_a_sys_path_folder_outside_the_project(project, pivot, tmp_path) -> None:
    """Neither project code nor an installed distribution: fingerprinted by its source."""
    ext = tmp_path / "extlib"
    write_files(ext, {"extmod.py": "K = 2\n\n\ndef f():\n    return K\n"})
    write_files(ext, {"extpkg/__init__.py": "", "extpkg/deep.py": "def g():\n    return 1\n"})
    env = {"PYTHONPATH": os.pathsep.join((str(ext), PYTHONPATH))}
    pipeline = stage_reading("(extmod.f(), g())", "import extmod\n").replace(
        '    _count("compute")\n', '    _count("compute")\n    from extpkg.deep import g\n'
    )
    write_files(project, {"pipeline.py": pipeline})
    run_twice(project, pivot, **env)
    assert (project / "out.txt").read_text() == "(2, 1)"
    lock = json.loads((project / ".pivot/stages/p/compute.lock").read_text())
    assert {"func:extmod.f", "const:extmod.K", "func:extpkg.deep.g"} <= set(lock["fingerprint"])

    write_files(ext, {"extmod.py": "K = 3\n\n\ndef f():\n    return K\n"})
    status = pivot("status", **env).stdout
    assert "code changed: const:extmod.K" in status, status
    pivot("run", **env)
    assert (project / "out.txt").read_text() == "(3, 1)"
    assert "up to date" in pivot("run", **env).stdout
    write_files(ext, {"extpkg/deep.py": "def g():\n    return 5\n"})
    assert "code changed: func:extpkg.deep.g" in pivot("status", **env).stdout
    pivot("run", **env)
    assert (project / "out.txt").read_text() == "(3, 5)"
    assert executions(project) == ["compute", "compute", "compute"]


def test_a_namespace_package_portion_outside_the_project(project, pivot, tmp_path) -> None:
    """A namespace package spread over a PYTHONPATH folder of the user's own code and an
    installed distribution: the user's portion is not the distribution's code (its version
    does not move when the user edits it), so it is fingerprinted by its source."""
    ext, site = tmp_path / "extlib", tmp_path / "site"
    write_files(ext, {"acme/mine.py": "def f():\n    return 100\n"})
    meta = "Metadata-Version: 2.1\nName: acme-tools\nVersion: 1.0\n"
    write_files(
        site,
        {
            "acme/tools.py": "def g():\n    return 0\n",
            "acme_tools-1.0.dist-info/METADATA": meta,
            "acme_tools-1.0.dist-info/top_level.txt": "acme\n",
        },
    )
    env = {"PYTHONPATH": os.pathsep.join((str(ext), str(site), PYTHONPATH))}
    write_files(project, {"pipeline.py": stage_reading("acme.mine.f()", "import acme.mine\n")})
    run_twice(project, pivot, **env)
    assert (project / "out.txt").read_text() == "100"

    write_files(ext, {"acme/mine.py": "def f():\n    return 200\n"})
    assert_reruns(project, pivot, "func:acme.mine.f", "200", **env)


def test_a_distribution_version_edited_in_place(project, pivot, tmp_path) -> None:
    """The version is its METADATA's: an edit in place (same size, mtime put back, the
    dist-info folder's name and listing unchanged) is seen by `status`, `run` and the memo."""
    site = tmp_path / "site"
    meta = "Metadata-Version: 2.1\nName: fakedist\nVersion: 1.0\n"
    write_files(
        site,
        {"fakedist/__init__.py": "VALUE = 1\n", "fakedist-1.0.dist-info/METADATA": meta},
    )
    env = {"PYTHONPATH": os.pathsep.join((str(site), PYTHONPATH))}
    write_files(project, {"pipeline.py": stage_reading("fakedist.VALUE", "import fakedist\n")})
    run_twice(project, pivot, **env)
    lock = json.loads((project / ".pivot/stages/p/compute.lock").read_text())
    assert lock["fingerprint"]["dist:fakedist"] == "1.0"

    rewrite_keeping_mtime(site / "fakedist-1.0.dist-info/METADATA", meta.replace("1.0", "1.1"))
    assert_reruns(project, pivot, "dist:fakedist", "1", **env)
    lock = json.loads((project / ".pivot/stages/p/compute.lock").read_text())
    assert lock["fingerprint"]["dist:fakedist"] == "1.1"


DECORATED = """
import functools
import os

import pytest


def times(n):
    def deco(f):
        @functools.wraps(f)
        def wrapper(*args):
            return f(*args) * n

        return wrapper

    return deco


class Scaler:
    @staticmethod
    @times(int(os.environ.get("SCALE", "2")))
    def factor():
        return 1
"""


def test_a_decorator_argument_of_a_staticmethod(project, pivot) -> None:
    write_files(
        project, {"pipeline.py": stage_reading("helpers.Scaler.factor()"), "helpers.py": DECORATED}
    )
    run_twice(project, pivot)
    part = "closure:helpers.times.<locals>.deco.<locals>.wrapper.n"
    assert_reruns(project, pivot, part, "3", SCALE="3")


PROXY = """
class Lazy:
    '''A lazy proxy whose target cannot be made here (a database, a service): every
    attribute read, `__class__` and `__dict__` among them, raises.'''

    def __call__(self):
        return 0

    def __getattribute__(self, name):
        raise RuntimeError(f"cannot connect (reading {name})")


class Holder:
    conn = Lazy()

    @classmethod
    def go(cls):
        return 1

    def __init__(self):
        self.conn = Lazy()

    def out(self):
        return 2
"""


def test_objects_whose_every_attribute_raises_do_not_stop_the_run(project, pivot) -> None:
    """Fingerprinting never crashes a run: such a class attribute, bound-method object or
    library field record (`__attrs_attrs__`) is an untracked part, the same in every
    process."""
    source = stage_reading("helpers.Holder.go() + helpers.Holder().out()") + (
        "\n\ndef other(self) -> Annotated[str, pivot.Out('other.txt', pivot.loaders.Text())]:\n"
        "    return 'x'\n\n\nholder = helpers.Holder()\n"
        "helpers.Holder.other = other\npipeline.register(holder.other, name='bound')\n"
    )
    proxy = PROXY + (
        "\n\nimport attrs  # noqa: E402\n\n\nclass Odd:\n    __attrs_attrs__ = (Lazy(),)\n"
        "\n    @classmethod\n    def go(cls):\n        return 0\n"
    )
    source = source.replace("helpers.Holder.go()", "helpers.Holder.go() + helpers.Odd.go()")
    write_files(project, {"pipeline.py": source, "helpers.py": proxy})
    done = pivot("run")
    assert "Internal error" not in done.stderr, done.stderr
    assert (project / "out.txt").read_text() == "3"
    assert (project / "other.txt").read_text() == "x"
    assert "up to date" in pivot("run").stdout


FACTORY = """
import dataclasses
import functools
import os

import pytest


@dataclasses.dataclass
class Cfg:
    items: list = dataclasses.field(
        default_factory=functools.partial(list, [int(os.environ.get("ITEM", "1"))])
    )
    n: int = 2
"""


def test_a_dataclass_default_factory_made_at_import(project, pivot) -> None:
    """A field's default_factory is no class attribute (the dataclass keeps it in its
    fields); the value it was made with at import is a part of the class."""
    stage = stage_reading("helpers.Cfg().items")
    write_files(project, {"pipeline.py": stage, "helpers.py": FACTORY})
    run_twice(project, pivot, ITEM="1")
    assert (project / "out.txt").read_text() == "[1]"
    assert_reruns(project, pivot, "const:helpers.Cfg.items", "[9]", ITEM="9")


ATTRS = """
import os

import pytest

import attrs


@attrs.define
class Cfg:
    k: int = attrs.field(default=int(os.environ.get("K", "1")))
"""


def test_the_default_of_a_field_in_generated_code(project, pivot) -> None:
    """attrs keeps a field's default only in the `__init__` it generates (no class
    attribute): the defaults of a class's generated methods are parts of the class."""
    pytest.importorskip("attrs")
    write_files(project, {"pipeline.py": stage_reading("helpers.Cfg().k"), "helpers.py": ATTRS})
    run_twice(project, pivot, K="1")
    assert_reruns(project, pivot, "closure:helpers.Cfg.__init__.__defaults__", "4", K="4")


PYDANTIC = """
import functools
import os

import pydantic


def make_items():
    return [1]


class Cfg(pydantic.BaseModel):
    k: int = int(os.environ.get("K", "1"))
    m: int = pydantic.Field(default=int(os.environ.get("M", "1")), ge=0)
    items: list = pydantic.Field(
        default_factory=functools.partial(list, [int(os.environ.get("ITEM", "1"))])
    )
    made: list = pydantic.Field(default_factory=make_items)
    low: int = pydantic.Field(default=0, ge=-int(os.environ.get("LOW", "5")))
    _hidden: int = pydantic.PrivateAttr(default=int(os.environ.get("HIDDEN", "1")))
"""


@pytest.mark.parametrize(
    ("expr", "env", "part", "out"),
    [
        ("helpers.Cfg().k", {"K": "4"}, "const:helpers.Cfg.k", "4"),
        ("helpers.Cfg().m", {"M": "5"}, "const:helpers.Cfg.m", "5"),
        ("helpers.Cfg().items", {"ITEM": "9"}, "const:helpers.Cfg.items", "[9]"),
        ("helpers.Cfg(low=-7).low", {"LOW": "9"}, "const:helpers.Cfg.low", "-7"),
        ("helpers.Cfg()._hidden", {"HIDDEN": "3"}, "const:helpers.Cfg._hidden", "3"),
    ],
    ids=["annotated-default", "field-default", "default-factory", "field-constraint", "private"],
)
def test_a_pydantic_field_made_at_import(project, pivot, expr, env, part, out) -> None:
    """pydantic keeps a field's default, default_factory and constraints in the model's
    FieldInfo objects, a private attribute's default in its ModelPrivateAttr (no class
    attribute): the values they were made with at import are parts of the class."""
    pytest.importorskip("pydantic")
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": PYDANTIC})
    if part.endswith(".low"):  # valid with LOW=9 only: the run that sees LOW=5 fails
        run_twice(project, pivot, **env)
        assert (project / "out.txt").read_text() == out
        status = pivot("status").stdout
        assert "will run" in status and f"code changed: {part}" in status, status
        pivot("run", rc=1)
        return
    run_twice(project, pivot)
    assert_reruns(project, pivot, part, out, **env)


ATTRS_FACTORIES = """
import functools
import os

import attrs


def make_items():
    return [1]


def at_most(limit, instance, attribute, value):
    if value > limit:
        raise ValueError(f"{attribute.name} over {limit}")


@attrs.define
class Cfg:
    items: list = attrs.field(factory=functools.partial(list, [int(os.environ.get("ITEM", "1"))]))
    more: list = attrs.Factory(functools.partial(list, [int(os.environ.get("MORE", "1"))]))
    n: int = attrs.field(
        default="11", converter=functools.partial(int, base=int(os.environ.get("BASE", "10")))
    )
    late: int = attrs.field(default=int(os.environ.get("LATE", "1")), init=False)
    made: list = attrs.field(factory=make_items)
    capped: int = attrs.field(
        default=0, validator=functools.partial(at_most, int(os.environ.get("MOST", "5")))
    )
"""


@pytest.mark.parametrize(
    ("expr", "env", "part", "out"),
    [
        ("helpers.Cfg().items", {"ITEM": "9"}, "const:helpers.Cfg.items", "[9]"),
        ("helpers.Cfg().more", {"MORE": "9"}, "const:helpers.Cfg.more", "[9]"),
        ("helpers.Cfg().n", {"BASE": "2"}, "const:helpers.Cfg.n", "3"),
        ("helpers.Cfg().late", {"LATE": "6"}, "const:helpers.Cfg.late", "6"),
        ("helpers.Cfg(capped=4).capped", {"MOST": "3"}, "const:helpers.Cfg.capped", None),
    ],
    ids=["field-factory", "Factory", "converter", "default-outside-init", "validator"],
)
def test_an_attrs_field_made_at_import(project, pivot, expr, env, part, out) -> None:
    """attrs keeps a field's factory, converter and validator, and the default of a field
    out of `__init__`, in the globals of the `__init__` it generates: the values they were made
    with at import are parts of the class."""
    pytest.importorskip("attrs")
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": ATTRS_FACTORIES})
    run_twice(project, pivot)
    if out is None:  # valid with MOST=5 only: the run that sees MOST=3 fails
        status = pivot("status", **env).stdout
        assert "will run" in status and f"code changed: {part}" in status, status
        pivot("run", rc=1, **env)
        return
    assert_reruns(project, pivot, part, out, **env)


@pytest.mark.parametrize(
    ("library", "expr", "edit", "part", "out"),
    [
        (
            "pydantic",
            "helpers.Cfg().made",
            ("return [1]", "return [2]"),
            "func:helpers.make_items",
            "[2]",
        ),
        ("pydantic", "helpers.Cfg().low", ("default=0", "default=3"), "class:helpers.Cfg", "3"),
        (
            "attrs",
            "helpers.Cfg().made",
            ("return [1]", "return [2]"),
            "func:helpers.make_items",
            "[2]",
        ),
    ],
    ids=["pydantic-factory-function", "pydantic-default-in-source", "attrs-factory-function"],
)
def test_a_field_edited_in_the_project_source(
    project, pivot, library, expr, edit, part, out
) -> None:
    """Covered by the source: a default written in the class body, a factory that is a
    project function (its code is followed)."""
    pytest.importorskip(library)
    helpers = PYDANTIC if library == "pydantic" else ATTRS_FACTORIES
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": helpers})
    run_twice(project, pivot)
    write_files(project, {"helpers.py": helpers.replace(*edit)})
    assert_reruns(project, pivot, part, out)


THREADS = """
import concurrent.futures
import os
import threading

for _ in range(int(os.environ.get("EARLIER", "0"))):
    threading.Thread(target=print)
    concurrent.futures.ThreadPoolExecutor(max_workers=1).shutdown()

WORKER = threading.Thread(target=print, daemon=True)
POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1)
RUNNING = threading.Thread(target=threading.Event().wait, daemon=True)
RUNNING.start()


class Holder:
    worker = threading.Thread(target=print, daemon=True)
"""


def test_threads_and_pools_read_by_a_stage_are_the_same_in_every_process(project, pivot) -> None:
    """A thread's or pool's name comes from a per-process counter ("Thread-3",
    "ThreadPoolExecutor-0_0") and a running thread's repr holds its ident: such an object
    stands as its type, so a process that made more threads first is still up to date."""
    expr = "(helpers.WORKER.daemon, helpers.POOL is not None, helpers.RUNNING.daemon, helpers.Holder.worker.daemon)"
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": THREADS})
    pivot("run")
    assert (project / "out.txt").read_text() == "(True, True, True, True)"
    for earlier in ("0", "3", "1"):
        assert "Every stage is up to date" in pivot("status", EARLIER=earlier).stdout
        assert "Every stage is up to date" in pivot("run", EARLIER=earlier).stdout
    assert executions(project) == ["compute"]


@pytest.mark.parametrize(
    ("helpers", "expr"),
    [
        ("PYDANTIC", "helpers.Cfg().k"),
        ("ATTRS_FACTORIES", "helpers.Cfg().items"),
        ("THREADS", "helpers.RUNNING.daemon"),
    ],
    ids=["pydantic", "attrs", "threads"],
)
def test_a_no_op_reaching_such_classes_is_replayed_from_the_memo(
    project, pivot, helpers, expr
) -> None:
    """The verdict memo's digest of them is the same in the next process: a pydantic
    model's core schema (which names the class by its id()) is left out, a running thread
    (whose repr holds its ident) stands as its type."""
    pytest.importorskip({"PYDANTIC": "pydantic", "ATTRS_FACTORIES": "attrs"}.get(helpers, "os"))
    write_files(project, {"pipeline.py": stage_reading(expr), "helpers.py": globals()[helpers]})
    run_twice(project, pivot)
    memo = project / ".pivot/tmp/verdict.msgpack"
    before = (memo.stat().st_ino, memo.stat().st_mtime_ns)
    assert "up to date" in pivot("run").stdout
    assert (memo.stat().st_ino, memo.stat().st_mtime_ns) == before, "not replayed from the memo"
    assert executions(project) == ["compute"]
