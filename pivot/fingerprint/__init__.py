"""Code fingerprints of stage functions: which Python code a stage's result depends on.

A fingerprint is a flat dict `{part name: value}` so that `pivot status` can say what
changed. Part names:

- `func:<qualname>` / `class:<qualname>`: a function or class (whole class, methods included)
  defined in a project file; the value hashes its normalised AST (`ast` with docstrings,
  comments, formatting and its own name left out). Things defined in another file than the
  stage's own are prefixed with that file's module path relative to the project root:
  `func:helpers.clean`, `class:lib.models.Model`. Module-level lambdas are named after the
  variable that holds them; other lambdas get `<lambda>#<hash prefix>`.
- `const:<name>` / `const:<module>.<name>`: a module-level constant read by the code; the
  value hashes its canonical text (`canonical.py`; the project root's absolute path becomes
  `<root>`). A constant assigned something else than a literal (`CFG = Cfg(scale=2)`) also
  hashes the normalised source of its assignments. A value with no stable form (a lock, a
  NumPy array, an object of a third-party class, a thread, process, pool or pipe) stands
  as its type's name and the part's value starts with `untracked:` (UNTRACKED; see
  `untracked_parts`).
- `closure:<function qualname>.<variable>`: a constant captured in a closure. A name local
  to the function that defines a nested stage (a factory's parameter, read by the stage's
  annotations or defaults) is never taken for the module global of the same name.
  `closure:<function qualname>.__defaults__`: the default values of a function's
  parameters, computed when its `def` ran (for methods, static and class methods and
  properties, when their class statement ran; a method generated for the class, like the
  `__init__` attrs writes, is `closure:<class qualname>.<method>.__defaults__`).
- `const:<class qualname>.<name>`: a data attribute of a project class, as its class
  statement made it (`K = int(os.environ["K"])` in the class body); for a field of a
  dataclass, an attrs class or a pydantic model, what its library keeps of it elsewhere
  (`resolve.field_values`: a factory, converter, validator, default or constraint).
- `dist:<distribution>`: third-party code; the value is the installed version. A module
  from a `sys.path` folder outside the project that no installed distribution provides
  (no dist-info in that folder; a namespace package's portion there is not the code of a
  distribution installed elsewhere) has no version to go by: it counts as project code,
  by its source, labelled by its module path (`func:extmod.f`).

The standard library, builtins and the `pivot` package itself add nothing. Imports inside
function bodies are followed through source without running the imported module
(`source_imports.py`). Results are cached per function object and source indexes per file
(`source_index.py`, on disk by `index_cache.py`); `clear_cache()` forgets them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import blake3

from pivot.fingerprint import dists, source_index
from pivot.fingerprint.canonical import UNTRACKED, canonical_json, untracked_parts
from pivot.fingerprint.resolve import STATES, Fingerprinter, unwrap
from pivot.fingerprint.source_index import checked_once

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable

__all__ = [
    "UNTRACKED",
    "canonical_json",
    "checked_once",
    "clear_cache",
    "fingerprint",
    "fingerprint_digest",
    "source_files",
    "untracked_parts",
]

_LOCK = threading.RLock()


def fingerprint(
    func: Callable[..., Any], project_root: pathlib.Path, params: Any = None
) -> dict[str, str]:
    """Parts of the stage function's code fingerprint: {part name: hash or version}.

    The functions and classes found in `params` (the stage's params: in containers,
    dataclasses, partials and plain objects, at any depth) are code the stage runs too:
    their parts join the function's, found the same way.
    """
    with _LOCK:
        state = STATES.get(str(project_root))
        if state is None:
            state = STATES[str(project_root)] = Fingerprinter(project_root)
        hit = state.results.get(id(func))
        if hit is not None and hit[0] is func:
            parts = hit[1]
        else:
            parts = state.compute(func)
            state.results[id(func)] = (func, parts)
        if params is None:
            return dict(parts)
        return state.with_params(parts, params, unwrap(func)[0].__code__.co_filename)


def source_files(
    func: Callable[..., Any], project_root: pathlib.Path, params: Any = None
) -> set[str]:
    """The project source files (absolute paths) that `fingerprint(func, project_root,
    params)` reads, and the metadata files of the distributions whose versions it holds:
    editing another file cannot change it."""
    with _LOCK:
        state = STATES.get(str(project_root))
        if state is None:
            state = STATES[str(project_root)] = Fingerprinter(project_root)
        return state.files(func, params)


def fingerprint_digest(parts: dict[str, str]) -> str:
    """One BLAKE3 hex digest (64 chars, `blake3` package) over the sorted parts."""
    text = "".join(
        f"{len(name)}:{name}={len(value)}:{value}\n" for name, value in sorted(parts.items())
    )
    return blake3.blake3(text.encode()).hexdigest()


def clear_cache() -> None:
    """Forget every parsed file, fingerprint and distribution version of this process."""
    with _LOCK:
        STATES.clear()
        source_index.forget()
        dists.clear()
