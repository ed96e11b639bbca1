"""Shared helpers of the fingerprint tests: projects loaded the way Pivot loads them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import sys
import textwrap

from pivot import fingerprint as fp
from pivot.discover.fresh_code import SourceHashLoader, install

_names = itertools.count()


def write(root, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def load(root, file: str = "pipeline.py", fresh: bool = True):
    """Import like Pivot: synthetic module name, its folder on sys.path, the project's modules
    from bytecode only when it matches their source, helpers dropped after.

    `fresh` forgets the fingerprint caches, as a new `pivot` process would.
    """
    if fresh:
        fp.clear_cache()
    before = set(sys.modules)
    name = f"_pivot_pipeline_test_{next(_names)}"
    install(str(root))
    path = root / file
    spec = importlib.util.spec_from_file_location(
        name, path, loader=SourceHashLoader(name, str(path))
    )
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
