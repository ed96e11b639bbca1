"""Canonical text of values: config objects, untracked values, `canonical_json`."""

from __future__ import annotations

import os
import sys

import pytest
from fp_support import changed, load, parts_of, write
from support import ROOT

from pivot import fingerprint as fp

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
    # `tags=()`: the default of a method, computed when the class statement ran
    assert {"func:stage", "class:Cfg", "const:CFG", "closure:Cfg.__init__.__defaults__"} == set(
        before
    )
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
    # Installed: a distribution provides it (a module with none counts as project code).
    (site / "extlib-1.0.dist-info").mkdir()
    (site / "extlib-1.0.dist-info/METADATA").write_text("Name: extlib\nVersion: 1.0\n")
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
    assert "fp_support.write" in text  # named by module.qualname
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


def test_threads_processes_pools_and_pipes_have_no_stable_form():
    """Their names come from per-process counters ("Thread-3", "ThreadPoolExecutor-0_0"),
    a running thread's repr holds its ident, a pipe its file descriptors: refused by `canonical_json`, a type's name in
    the lenient walk (a subclass too)."""
    import concurrent.futures
    import multiprocessing
    import threading

    from pivot.fingerprint.canonical import Canon

    class Worker(threading.Thread):
        pass

    values = [
        threading.Thread(target=print),
        Worker(),
        concurrent.futures.ThreadPoolExecutor(max_workers=1),
        multiprocessing.get_context("spawn").Process(target=print),
        multiprocessing.get_context("spawn").SimpleQueue(),  # file descriptor numbers
        multiprocessing.Pipe()[0],
    ]
    for value in values:
        with pytest.raises(TypeError, match="thread, process, pool or pipe"):
            fp.canonical_json({"v": value})
        canon = Canon(strict=False)
        text = canon.text([value])
        assert (
            canon.untracked
            and text == f'[{{"untracked":"{type(value).__module__}.{type(value).__qualname__}"}}]'
        )


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
