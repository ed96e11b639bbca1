"""Code fingerprints of stage functions: which Python code a stage's result depends on.

A fingerprint is a flat dict `{part name: value}` so that `pivot status --explain` can say
what changed. Part names:

- `func:<qualname>` / `class:<qualname>`: a function or class (whole class, methods included)
  defined in a project file; the value hashes its normalised AST (`ast` with docstrings,
  comments, formatting and its own name left out). Things defined in another file than the
  stage's own are prefixed with that file's module path relative to the project root:
  `func:helpers.clean`, `class:lib.models.Model`. Module-level lambdas are named after the
  variable that holds them; other lambdas get `<lambda>#<hash prefix>`.
- `const:<name>` / `const:<module>.<name>`: a module-level constant read by the code; the
  value hashes a canonical text of it (see `canonical_json`; the project root's absolute
  path is replaced by `<root>`): numbers, strings, paths, enums, dataclasses, containers,
  and objects of plain project (or standard library) classes through their `__dict__` /
  `__slots__`, with their class's name. A constant assigned something else than a literal
  (`CFG = Cfg(scale=2)`) also hashes the normalised source of its assignments, so an edit
  there counts even where the value cannot be seen.
- `closure:<function qualname>.<variable>`: a constant captured in a closure.

A value, or a piece of one, that has no stable form (a lock, a NumPy array, an object of a
third-party class: its state may hold caches, handles or ids) is not dropped: it stands as
its type's name, and the part's value starts with `untracked:` (UNTRACKED) so that
`untracked_parts()` can say which parts Pivot cannot fully track.
- `dist:<distribution>`: third-party code; the value is the installed version.

The standard library, builtins and the `pivot` package itself add nothing.

Imports inside a function body (`import rows`, `import lib.maths as m`, `from lib import x`,
`from . import y`) are followed too, without running the imported module: it is looked up
the way a Pivot run would find it (the function's folder first, then the project root, then
sys.path) and a project module is read from its source. The names the function reads through
the import, and what their code reads in turn, give the same parts as module globals do
(`func:rows.make`, `const:lib.maths.SCALE`; a module-level literal hashes as its value,
another value as its normalised expression). A third-party module imported in a function
adds its `dist:` part even where the function does not read it.

Speed: every source file is parsed at most once per process (keyed by path, mtime and size)
and the index of its top-level definitions is also kept on disk, keyed by the file's content,
under `<root>/.pivot/tmp/fingerprint/` (only when `<root>/.pivot/` exists), so a no-op run
parses nothing. Results are cached per function object; call `clear_cache()` to see edits
made to files during the life of the process.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import json
import marshal
import os
import sys
import threading
import types
from typing import TYPE_CHECKING, Any

import blake3

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable

__all__ = [
    "UNTRACKED",
    "canonical_json",
    "clear_cache",
    "fingerprint",
    "fingerprint_digest",
    "untracked_parts",
]

# Bump when the index layout or the normalisation changes: old disk entries are then ignored.
FORMAT = 2
CACHE_SUBDIR = (".pivot", "tmp", "fingerprint")

_PY_TAG = f"{sys.implementation.cache_tag}-{'.'.join(map(str, sys.version_info[:3]))}"
_STDLIB = frozenset(sys.stdlib_module_names) | {"__future__", "__main__"}
_PIVOT_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", ".pivot", "__pypackages__"})
_LOCK = threading.RLock()
_MISSING = object()
_MAX_DEPTH = 50

# One name bound by an import: (bound name, module, imported attribute or "", level).
# `import a.b` binds `a` to module "a"; `import a.b as c` binds `c` to module "a.b";
# `from ..a import b` binds `b` to attribute "b" of module "a" at level 2.
Import = tuple[str, str, str, int]
# An index entry describes one def / class / lambda of a source file (a plain tuple so that
# it can be stored with marshal): (kind, match name, qualname, hash, header refs, body refs,
# line numbers, column, local imports). kind is "func" or "class"; the match name is what the
# code object's co_name must equal ("<lambda>" for lambdas); header refs are the dotted names
# read by decorators, defaults and annotations (module scope), body refs those read by the
# body; local imports are the names bound by `import` statements inside the body.
Entry = tuple[
    str, str, str, str, tuple[str, ...], tuple[str, ...], tuple[int, ...], int, tuple[Import, ...]
]
_KIND, _MATCH, _QUAL, _HASH, _HEADER, _BODY, _LINES, _COL, _IMPORTS = range(9)
# A module-level binding of a source file, for modules that are read without being run:
# ("import", *Import) or ("const", name, hash of the value's normalised AST, is literal,
# literal value or None, refs of the value expression).
Binding = tuple[Any, ...]


def fingerprint(
    func: Callable[..., Any], project_root: pathlib.Path, params: Any = None
) -> dict[str, str]:
    """Parts of the stage function's code fingerprint: {part name: hash or version}.

    The functions and classes found in `params` (the stage's params: in containers,
    dataclasses, partials and plain objects, at any depth) are code the stage runs too:
    their parts join the function's, found the same way.
    """
    with _LOCK:
        state = _STATES.get(str(project_root))
        if state is None:
            state = _STATES[str(project_root)] = _Fingerprinter(project_root)
        hit = state.results.get(id(func))
        if hit is not None and hit[0] is func:
            parts = hit[1]
        else:
            parts = state.compute(func)
            state.results[id(func)] = (func, parts)
        if params is None:
            return dict(parts)
        return state.with_params(parts, params, _unwrap(func)[0].__code__.co_filename)


def fingerprint_digest(parts: dict[str, str]) -> str:
    """One BLAKE3 hex digest (64 chars, `blake3` package) over the sorted parts."""
    hasher = blake3.blake3()
    for name in sorted(parts):
        value = parts[name]
        hasher.update(f"{len(name)}:{name}={len(value)}:{value}\n".encode())
    return hasher.hexdigest()


def clear_cache() -> None:
    """Forget every parsed file, fingerprint and distribution version of this process."""
    global _PKG_DISTS
    with _LOCK:
        _STATES.clear()
        _FILES.clear()
        _DISTS.clear()
        _SITE_LISTINGS.clear()
        _SITE_TOP_LEVEL.clear()
        _SPECS.clear()
        _PKG_DISTS = None


def _top(module: Any) -> str:
    return module.partition(".")[0] if isinstance(module, str) else ""


def _hash(text: str) -> str:
    return blake3.blake3(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- normalised AST ---------------------------------------------------------------------

_AST = ast.AST
_Name = ast.Name
_Attribute = ast.Attribute
_Load = ast.Load
_Expr = ast.Expr
_Constant = ast.Constant
_Lambda = ast.Lambda
_ClassDef = ast.ClassDef
_Import = ast.Import
_ImportFrom = ast.ImportFrom
_FUNC_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_DOC_HOLDERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_BLOCK_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _strip_doc(body: list[Any]) -> list[Any]:
    if body and type(body[0]) is _Expr:
        value = body[0].value
        if type(value) is _Constant and type(value.value) is str:
            return body[1:]
    return body


def _ser(node: Any, out: list[str], refs: set[str], imports: list[Any]) -> None:
    """Append a position-free dump of `node` to `out` and the dotted names it reads to `refs`.

    Import statements met on the way are appended to `imports`.

    Equivalent in content to `ast.dump(node, include_attributes=False)` with the docstrings of
    nested defs and classes dropped, in one pass (twice as fast as ast.dump plus ast.walk).
    """
    cls = type(node)
    if cls is _Name:
        out.append(f"Name:{node.id}:{type(node.ctx).__name__}")
        if type(node.ctx) is _Load:
            refs.add(node.id)
        return
    if cls is _Attribute:
        attrs = [node.attr]
        value = node.value
        while type(value) is _Attribute:
            attrs.append(value.attr)
            value = value.value
        if type(value) is _Name:
            attrs.append(value.id)
            chain = ".".join(reversed(attrs))
            refs.add(chain)
            out.append(f"Attr:{chain}:{type(node.ctx).__name__}")
            return
    if cls is _Import or cls is _ImportFrom:
        imports.append(node)
    out.append(cls.__name__)
    out.append("(")
    for field in cls._fields:
        value = getattr(node, field, None)
        if type(value) is list:
            if field == "body" and cls in _DOC_HOLDERS:
                value = _strip_doc(value)
            out.append("[")
            for item in value:
                if isinstance(item, _AST):
                    _ser(item, out, refs, imports)
                else:
                    out.append(repr(item))
            out.append("]")
        elif isinstance(value, _AST):
            _ser(value, out, refs, imports)
        else:
            out.append(repr(value))
    out.append(")")


def _prune(refs: set[str]) -> tuple[str, ...]:
    """Sorted refs without those that prefix a longer chain (`a` when `a.b` is there)."""
    ordered = sorted(refs)
    return tuple(
        ref
        for i, ref in enumerate(ordered)
        if i + 1 == len(ordered) or not ordered[i + 1].startswith(ref + ".")
    )


def _import_bindings(node: Any) -> list[Import]:
    """The names an `import` / `from ... import` statement binds."""
    found = []
    if type(node) is _Import:
        for alias in node.names:
            if alias.asname:
                found.append((alias.asname, alias.name, "", 0))
            else:
                top = alias.name.partition(".")[0]
                found.append((top, top, "", 0))
    else:
        for alias in node.names:
            found.append((alias.asname or alias.name, node.module or "", alias.name, node.level))
    return found


def _make_entry(node: Any, qualname: str, match: str, col: int = 0) -> Entry:
    """Index entry of a def, class or lambda node; its own name is not part of the hash."""
    cls = type(node)
    is_class = cls is _ClassDef
    out = [cls.__name__]
    header: set[str] = set()
    body: set[str] = set()
    imports: list[Any] = []
    for field in cls._fields:
        if field == "name":
            continue
        value = getattr(node, field, None)
        refs = body if field == "body" and not is_class else header
        out.append(field)
        if type(value) is list:
            if field == "body":
                value = _strip_doc(value)
            out.append("[")
            for item in value:
                if isinstance(item, _AST):
                    _ser(item, out, refs, imports)
                else:
                    out.append(repr(item))
            out.append("]")
        elif isinstance(value, _AST):
            _ser(value, out, refs, imports)
        else:
            out.append(repr(value))
    bound = tuple(sorted({b for stmt in imports for b in _import_bindings(stmt)}))
    lines = [node.lineno]
    decorators = getattr(node, "decorator_list", None)
    if decorators and decorators[0].lineno != node.lineno:
        lines.append(decorators[0].lineno)
    kind = "class" if is_class else "func"
    text = "\x1f".join(out)
    return (
        kind,
        match,
        qualname,
        _hash(text),
        _prune(header),
        _prune(body),
        tuple(lines),
        col,
        bound,
    )


def _walk_defs(stmts: list[Any], prefix: str, depth: int, nested: bool, found: list) -> None:
    """Collect (node, qualname, depth) of defs and classes reachable through statements."""
    for stmt in stmts:
        cls = type(stmt)
        if cls in _DOC_HOLDERS:
            qualname = prefix + stmt.name
            found.append((stmt, qualname, depth))
            if nested:
                sub = qualname + ("." if cls is _ClassDef else ".<locals>.")
                _walk_defs(stmt.body, sub, depth + 1, nested, found)
            continue
        for field in _BLOCK_FIELDS:
            block = getattr(stmt, field, None)
            if type(block) is list and block:
                _walk_defs(block, prefix, depth, nested, found)


def _top_level_entries(tree: ast.Module) -> list[Entry]:
    """Entries of module-level defs, classes and `name = lambda ...` assignments."""
    found: list = []
    _walk_defs(tree.body, "", 0, False, found)
    entries = [_make_entry(node, qual, node.name) for node, qual, _ in found]
    for stmt in tree.body:
        value = getattr(stmt, "value", None)
        if type(value) is not _Lambda:
            continue
        targets = stmt.targets if type(stmt) is ast.Assign else [getattr(stmt, "target", None)]
        if len(targets) == 1 and type(targets[0]) is _Name:
            entries.append(_make_entry(value, targets[0].id, "<lambda>", value.col_offset))
    return entries


def _target_names(target: Any, found: list[str]) -> None:
    if type(target) is _Name:
        found.append(target.id)
    elif type(target) in (ast.Tuple, ast.List):
        for item in target.elts:
            _target_names(item, found)
    elif type(target) is ast.Starred:
        _target_names(target.value, found)


def _module_bindings(stmts: list[Any], found: list[Binding]) -> None:
    """Imports and assigned values of module-level names (defs and classes are entries)."""
    for stmt in stmts:
        cls = type(stmt)
        if cls in _DOC_HOLDERS:
            continue
        if cls is _Import or cls is _ImportFrom:
            found.extend(("import", *b) for b in _import_bindings(stmt))
            continue
        if cls is ast.Assign or cls is ast.AnnAssign or cls is ast.AugAssign:
            value = stmt.value
            targets = stmt.targets if cls is ast.Assign else [stmt.target]
            names: list[str] = []
            for target in targets:
                _target_names(target, names)
            if value is None or not names:
                continue
            if type(value) is _Lambda and len(names) == 1 and cls is not ast.AugAssign:
                continue  # an entry of its own, named after the variable
            out = [cls.__name__, *(ast.dump(t) for t in targets)]
            refs: set[str] = set()
            _ser(value, out, refs, [])
            literal, is_literal = None, False
            if cls is not ast.AugAssign and len(names) == 1 and type(targets[0]) is _Name:
                with contextlib.suppress(Exception):
                    literal, is_literal = ast.literal_eval(value), True
            digest = _hash("\x1f".join(out))
            for name in names:
                found.append(("const", name, digest, is_literal, literal, _prune(refs)))
            continue
        for field in _BLOCK_FIELDS:
            block = getattr(stmt, field, None)
            if type(block) is list and block:
                _module_bindings(block, found)


def _parse(source: bytes) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


class _FileIndex:
    """The defs of one source file, by first line and (for classes) by qualname.

    `top` and `bindings` describe its module-level names, for following names into a module
    that a function imports locally without running it.
    """

    def __init__(self, path: str, key: tuple[int, int], digest: str) -> None:
        self.path = path
        self.key = key
        self.digest = digest
        self.by_line: dict[int, list[Entry]] = {}
        self.classes: dict[str, Entry] = {}
        self.top: dict[str, list[Entry]] = {}
        self.bindings: dict[str, list[Binding]] = {}
        self.stars: list[Binding] = []
        self.lambda_spots: set[tuple[int, int]] = set()
        self.tree: ast.Module | None = None
        self.parsed = False
        self.nested_done = False
        self.lambdas_done = False

    def add(self, entry: Entry) -> None:
        for line in entry[_LINES]:
            self.by_line.setdefault(line, []).append(entry)
        qual = entry[_QUAL]
        if entry[_KIND] == "class":
            self.classes[qual] = entry
        elif entry[_MATCH] == "<lambda>":
            self.lambda_spots.add((entry[_LINES][0], entry[_COL]))
        if "." not in qual and qual != "<lambda>":
            self.top.setdefault(qual, []).append(entry)

    def add_binding(self, binding: Binding) -> None:
        if binding[0] == "import" and binding[3] == "*":
            self.stars.append(binding)
        else:
            self.bindings.setdefault(binding[1], []).append(binding)

    def get_tree(self) -> ast.Module | None:
        if not self.parsed:
            self.parsed = True
            try:
                with open(self.path, "rb") as fh:
                    self.tree = _parse(fh.read())
            except OSError:
                self.tree = None
        return self.tree

    def add_nested(self) -> None:
        """Index methods and nested functions / classes (not kept on disk: rarely needed)."""
        self.nested_done = True
        tree = self.get_tree()
        if tree is None:
            return
        found: list = []
        _walk_defs(tree.body, "", 0, True, found)
        for node, qual, depth in found:
            if depth:
                self.add(_make_entry(node, qual, node.name))

    def add_lambdas(self) -> None:
        self.lambdas_done = True
        tree = self.get_tree()
        if tree is None:
            return
        for node in ast.walk(tree):
            if type(node) is _Lambda and (node.lineno, node.col_offset) not in self.lambda_spots:
                self.add(_make_entry(node, "<lambda>", "<lambda>", node.col_offset))

    def find_func(self, code: types.CodeType) -> Entry | None:
        """The entry of the def or lambda that compiled to `code`, matched by line and name."""
        line, name = code.co_firstlineno, code.co_name
        found = [e for e in self.by_line.get(line, ()) if e[_MATCH] == name]
        if not found and not self.nested_done:
            self.add_nested()
            found = [e for e in self.by_line.get(line, ()) if e[_MATCH] == name]
        if not found and name == "<lambda>" and not self.lambdas_done:
            self.add_lambdas()
            found = [e for e in self.by_line.get(line, ()) if e[_MATCH] == name]
        if len(found) <= 1:
            return found[0] if found else None
        # Several lambdas on one line: depend on all of them.
        digest = _hash("\n".join(sorted(e[_HASH] for e in found)))
        header = tuple(sorted({r for e in found for r in e[_HEADER]}))
        body = tuple(sorted({r for e in found for r in e[_BODY]}))
        imports = tuple(sorted({b for e in found for b in e[_IMPORTS]}))
        return (*found[0][:3], digest, header, body, found[0][_LINES], 0, imports)

    def find_class(self, qualname: str) -> Entry | None:
        entry = self.classes.get(qualname)
        if entry is None and not self.nested_done:
            self.add_nested()
            entry = self.classes.get(qualname)
        return entry


_FILES: dict[str, _FileIndex] = {}


def _file_index(path: str, cache_dir: str | None) -> _FileIndex | None:
    """The index of a source file: from memory, from the disk cache, or parsed now."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    index = _FILES.get(path)
    if index is not None and index.key == key:
        return index
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError:
        return None
    digest = blake3.blake3(source).hexdigest()
    if index is not None and index.digest == digest:
        index.key = key
        return index
    index = _FileIndex(path, key, digest)
    stored = _disk_load(cache_dir, path, digest) if cache_dir else None
    if stored is None:
        index.parsed = True
        index.tree = _parse(source)
        entries: list[Entry] = []
        bindings: list[Binding] = []
        if index.tree is not None:
            entries = _top_level_entries(index.tree)
            _module_bindings(index.tree.body, bindings)
            if cache_dir:
                _disk_store(cache_dir, path, digest, entries, bindings)
    else:
        entries, bindings = stored
    for entry in entries:
        index.add(entry)
    for binding in bindings:
        index.add_binding(binding)
    _FILES[path] = index
    return index


def _disk_file(cache_dir: str, path: str) -> str:
    return os.path.join(cache_dir, blake3.blake3(path.encode()).hexdigest()[:32] + ".idx")


def _disk_load(cache_dir: str, path: str, digest: str) -> tuple[list[Entry], list[Binding]] | None:
    try:
        with open(_disk_file(cache_dir, path), "rb") as fh:
            record = marshal.loads(fh.read())
        fmt, tag, stored_digest, entries, bindings = record
        if fmt != FORMAT or tag != _PY_TAG or stored_digest != digest:
            return None
        if not isinstance(entries, tuple) or not all(
            isinstance(e, tuple) and len(e) == 9 for e in entries
        ):
            return None
        if not isinstance(bindings, tuple) or not all(
            isinstance(b, tuple) and len(b) == (5 if b[0] == "import" else 6) for b in bindings
        ):
            return None
        return list(entries), list(bindings)
    except Exception:  # absent, unreadable or corrupt: recompute
        return None


def _disk_store(
    cache_dir: str, path: str, digest: str, entries: list[Entry], bindings: list[Binding]
) -> None:
    target = _disk_file(cache_dir, path)
    tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        data = marshal.dumps((FORMAT, _PY_TAG, digest, tuple(entries), tuple(bindings)))
        os.makedirs(cache_dir, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except (OSError, ValueError):  # a read-only project still works, only slower
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# --- code objects -----------------------------------------------------------------------


def _code_names(code: types.CodeType) -> set[str]:
    """Global and attribute names used by `code` and the code nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _code_text(code: types.CodeType, out: list[str]) -> None:
    out.append(code.co_code.hex())
    out.append(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)))
    out.append(repr((code.co_argcount, code.co_kwonlyargcount, code.co_posonlyargcount)))
    out.append(repr(code.co_flags))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_text(const, out)
        else:
            out.append(repr(const))


def _code_hash(code: types.CodeType) -> str:
    """Fallback when no source is found: the bytecode, without names and positions."""
    out: list[str] = []
    _code_text(code, out)
    return _hash("\x1f".join(out))


# --- third-party distributions ----------------------------------------------------------

_DISTS: dict[str, list[tuple[str, str]]] = {}
_SITE_LISTINGS: dict[str, list[str]] = {}
_SITE_TOP_LEVEL: dict[str, dict[str, list[tuple[str, str]]]] = {}
_PKG_DISTS: dict[str, list[str]] | None = None
_SPECS: dict[str, tuple[str | None, tuple[str, ...]] | None] = {}


def _spec_location(top: str) -> tuple[str | None, tuple[str, ...]] | None:
    """(origin file, package folders) of a top-level module, found without importing it."""
    if top in _SPECS:
        return _SPECS[top]
    try:
        spec = importlib.util.find_spec(top)
    except Exception:  # e.g. a module in sys.modules without __spec__
        spec = None
    found = None
    if spec is not None:
        origin = spec.origin if spec.has_location else None
        found = (origin, tuple(spec.submodule_search_locations or ()))
    _SPECS[top] = found
    return found


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _dist_name(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _site_dists(site: str) -> list[tuple[str, str]]:
    """(name, version) of the `*.dist-info` folders in one sys.path folder."""
    listing = _SITE_LISTINGS.get(site)
    if listing is None:
        try:
            listing = os.listdir(site)
        except OSError:
            listing = []
        _SITE_LISTINGS[site] = listing
    found = []
    for entry in listing:
        if entry.endswith(".dist-info"):
            name, sep, version = entry[: -len(".dist-info")].partition("-")
            if sep:
                found.append((name, version))
    return found


def _dist_from_site(site: str, top: str) -> list[tuple[str, str]]:
    """Fast path: the dist-info next to the module, by name or by its top_level.txt."""
    dists = _site_dists(site)
    wanted = _norm(top)
    same = [(n, v) for n, v in dists if _norm(n) == wanted]
    if len(same) == 1:
        return [(_dist_name(same[0][0]), same[0][1])]
    mapping = _SITE_TOP_LEVEL.get(site)
    if mapping is None:
        mapping = {}
        for name, version in dists:
            txt = os.path.join(site, f"{name}-{version}.dist-info", "top_level.txt")
            try:
                with open(txt, encoding="utf-8") as fh:
                    tops = fh.read().split()
            except OSError:
                continue
            for module in tops:
                mapping.setdefault(module, []).append((_dist_name(name), version))
        _SITE_TOP_LEVEL[site] = mapping
    return sorted(set(mapping.get(top, ())))


def _dist_from_metadata(top: str) -> list[tuple[str, str]]:
    """Slow path through importlib.metadata (imported only here: it costs ~50 ms)."""
    global _PKG_DISTS
    from importlib import metadata

    try:
        return [(_dist_name(top), metadata.version(top))]
    except Exception:
        pass
    if _PKG_DISTS is None:
        try:
            _PKG_DISTS = metadata.packages_distributions()
        except Exception:
            _PKG_DISTS = {}
    found = []
    for name in sorted(set(_PKG_DISTS.get(top, ()))):
        try:
            found.append((_dist_name(name), metadata.version(name)))
        except Exception:
            continue
    return found


def _dists(top: str) -> list[tuple[str, str]]:
    """Installed distributions providing the top-level module `top`: [(name, version)]."""
    found = _DISTS.get(top)
    if found is not None:
        return found
    found = []
    module = sys.modules.get(top)
    if module is not None:
        file = getattr(module, "__file__", None)
        paths = list(getattr(module, "__path__", None) or ())
    else:  # imported inside a function that has not run
        file, paths = _spec_location(top) or (None, [])
    site = None
    if file:
        site = os.path.dirname(file)
        if os.path.basename(file).startswith("__init__."):
            site = os.path.dirname(site)
    elif paths:
        site = os.path.dirname(paths[0])
    if site:
        found = _dist_from_site(site, top)
    if not found:
        found = _dist_from_metadata(top)
    _DISTS[top] = found
    return found


# --- canonical values -------------------------------------------------------------------

# The value of a part whose constant Pivot cannot fully see starts with this marker.
UNTRACKED = "untracked:"
_NODE_BUDGET = 200_000  # values bigger than this are not walked
_BIG_INT = 2**63
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes made by a `class` statement
_PY_SUFFIXES = (".py", ".pyc", ".pyw")
_CALLABLE_KINDS = (
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
    types.MethodWrapperType,
)


class _TooLarge(Exception):
    """Raised when a value has more than `_NODE_BUDGET` nodes."""


def _type_label(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _dotted_name(obj: Any) -> str:
    """`module.qualname` of a function or class: the same in every process and clone."""
    module = getattr(obj, "__module__", None)
    if module is None:
        module = getattr(getattr(obj, "__objclass__", None), "__module__", None) or "?"
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    return f"{module}.{qual}"


def _short_name(obj: Any) -> str:
    """The qualname alone: fingerprints track the code of project objects separately."""
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")


def _is_plain(kind: type) -> bool:
    """True when instances of `kind` keep all their state in `__dict__` / `__slots__`.

    That is, every class of its MRO but `object` and `types.SimpleNamespace` is a Python
    class: made by a `class` statement (in a .py file, or in a module that is no longer
    loaded, like the project modules Pivot drops), not by a C extension or builtin module.
    """
    for cls in kind.__mro__:
        if cls is object or cls is types.SimpleNamespace:
            continue
        if not cls.__flags__ & _HEAPTYPE:
            return False
        if cls.__module__ in sys.builtin_module_names:
            return False
        file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if file and not file.endswith(_PY_SUFFIXES):  # a C extension
            return False
    return True


def _class_attr(kind: type, name: str) -> Any:
    for cls in kind.__mro__:
        if name in vars(cls):
            return vars(cls)[name]
    return None


def _object_state(v: Any, kind: type) -> list[tuple[str, Any]]:
    """The attributes of a plain object, from `__dict__` and `__slots__`, sorted by name.

    Values cached by `functools.cached_property` are left out: they depend on whether the
    property was read yet.
    """
    state: dict[str, Any] = {}
    try:
        attrs = object.__getattribute__(v, "__dict__")
    except AttributeError:
        attrs = None
    if isinstance(attrs, dict):
        for name, value in attrs.items():
            state[str(name)] = value
    for cls in kind.__mro__:
        slots = vars(cls).get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = f"_{cls.__name__.lstrip('_')}{slot}"  # name mangling
            try:
                state[slot] = object.__getattribute__(v, slot)
            except AttributeError:  # never assigned
                continue
    return sorted(
        (name, value)
        for name, value in state.items()
        if not isinstance(_class_attr(kind, name), functools.cached_property)
    )


_enc = json.encoder.encode_basestring_ascii  # a str as a JSON string (C, fast)


def _tag(tag: str, body: str) -> str:
    return f'{{"{tag}":{body}}}'


def _seq(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


class _Canon:
    """Writes a value as JSON text that is the same in every process and clone.

    Sets are sorted and dicts sorted by key; tuples and lists, int and str keys stay
    distinct; floats are their repr; functions and classes are named, dataclasses, enums and
    plain objects (state in `__dict__` / `__slots__`) carry their class's name and fields.
    Every JSON object in the text is a tag (`{"dict": ...}`, `{"tuple": ...}`, ...), so no
    two different values share one. Cycles become `{"backref": levels up}`.

    A value without such a form raises TypeError when `strict`; otherwise it becomes
    `{"untracked": "<type>"}` and `untracked` is set.
    """

    def __init__(
        self,
        strict: bool,
        name: Callable[[Any], str] = _dotted_name,
        seen: Callable[[Any], None] | None = None,
        walkable: Callable[[type], bool] = _is_plain,
        strip: Callable[[str], str] | None = None,
    ) -> None:
        self.strict = strict
        self.name = name  # names functions and classes
        self.seen = seen  # told of every function, class, module and object class met
        self.walkable = walkable  # whether instances of a class are read through their state
        self.strip = strip  # rewrites strings (the project root becomes `<root>`)
        self.untracked = False
        self.nodes = 0
        self.trail: list[tuple[str, Any]] = []  # where the walk is (strict mode only)
        self.path: dict[int, int] = {}

    def text(self, value: Any) -> str:
        """The canonical JSON text of `value`."""
        try:
            return self.walk(value, 0)
        except _TooLarge:
            if self.strict:
                raise TypeError(
                    f"{_type_label(type(value))} value has more than {_NODE_BUDGET} parts; "
                    f"too large to represent"
                ) from None
            self.untracked = True
            return _tag("untracked", '"too large"')

    def fail(self, v: Any, why: str) -> str:
        label = _type_label(type(v))
        if self.strict:
            where = "".join(fmt % (arg,) for fmt, arg in self.trail)
            raise TypeError(f"value{where} ({label}) {why}")
        self.untracked = True
        return _tag("untracked", _enc(label))

    def item(self, fmt: str, arg: Any, v: Any, depth: int) -> str:
        """Walk `v`, found at step `fmt % arg` (e.g. "[%r]" % key) of the value."""
        if not self.strict:
            return self.walk(v, depth)
        self.trail.append((fmt, arg))
        try:
            return self.walk(v, depth)
        finally:
            self.trail.pop()

    def walk(self, v: Any, depth: int) -> str:
        kind = type(v)
        if kind is str:
            return _enc(self.strip(v) if self.strip is not None else v)
        if kind is int:
            return repr(v) if -_BIG_INT < v < _BIG_INT else _tag("int", _enc(hex(v)))
        if v is None:
            return "null"
        if kind is bool:
            return "true" if v else "false"
        if kind is float or kind is complex:
            return _tag(kind.__name__, _enc(repr(v)))
        if kind is bytes or kind is bytearray:
            return _tag(kind.__name__, _enc(v.hex()))
        if kind is range:
            return _tag("range", f"[{v.start},{v.stop},{v.step}]")
        self.nodes += 1
        if self.nodes > _NODE_BUDGET:
            raise _TooLarge
        path, key = self.path, id(v)
        above = path.get(key)
        if above is not None:
            return _tag("backref", str(depth - above))
        if depth > _MAX_DEPTH:
            return self.fail(v, "is nested too deeply")
        path[key] = depth
        try:
            if kind is list and not self.strict:  # the common case, first
                walk = self.walk
                return "[" + ",".join([walk(x, depth + 1) for x in v]) + "]"
            return self.compound(v, kind, depth + 1)
        finally:
            del path[key]

    def classed(self, kind: type, tag: str, body: str) -> str:
        """A tag with the name of the value's class (told to `seen`)."""
        if self.seen is not None:
            self.seen(kind)
        return f'{{"{tag}":{body},"class":{_enc(self.name(kind))}}}'

    def compound(self, v: Any, kind: type, depth: int) -> str:
        if kind is dict:
            return self.mapping(v, kind, depth)
        if isinstance(v, (types.FunctionType, type, types.ModuleType, types.MethodType)):
            if self.seen is not None:
                self.seen(v)
            if isinstance(v, types.FunctionType):
                return _tag("function", _enc(self.name(v)))
            if isinstance(v, type):
                return _tag("class", _enc(self.name(v)))
            if isinstance(v, types.ModuleType):
                return _tag("module", _enc(v.__name__))
            owner = self.item("%s", ".__self__", v.__self__, depth)
            return _tag("method", f"[{owner},{_enc(v.__func__.__name__)}]")
        if isinstance(v, _CALLABLE_KINDS):
            owner = getattr(v, "__self__", None)
            if owner is None or isinstance(owner, types.ModuleType):
                return _tag("function", _enc(_dotted_name(v)))
            owner_text = self.item("%s", ".__self__", owner, depth)
            return _tag("method", f"[{owner_text},{_enc(v.__name__)}]")
        if isinstance(v, functools.partial):
            if self.seen is not None:
                self.seen(v.func)
            func = self.item("%s", ".func", v.func, depth)
            args = self.item("%s", ".args", v.args, depth)
            keywords = self.item("%s", ".keywords", v.keywords, depth)
            return _tag("partial", f"[{func},{args},{keywords}]")
        walk = self.walk
        if isinstance(v, (tuple, list)):
            if self.strict:
                items = [self.item("[%d]", i, x, depth) for i, x in enumerate(v)]
            else:
                items = [walk(x, depth) for x in v]
            if kind is list:
                return _seq(items)
            tag = "tuple" if isinstance(v, tuple) else "list"
            return _tag(tag, _seq(items)) if kind is tuple else self.classed(kind, tag, _seq(items))
        if isinstance(v, dict):
            return self.mapping(v, kind, depth)
        if isinstance(v, (set, frozenset)):
            tag = "frozenset" if isinstance(v, frozenset) else "set"
            if self.strict:
                items = [self.item("%s", "{…}", x, depth) for x in v]
            else:
                items = [walk(x, depth) for x in v]
            items.sort()
            if kind is set or kind is frozenset:
                return _tag(tag, _seq(items))
            return self.classed(kind, tag, _seq(items))
        enum = sys.modules.get("enum")
        if enum is not None and isinstance(v, enum.Enum):
            value = self.item("%s", ".value", v.value, depth)
            return self.classed(kind, "enum", f"[{_enc(v.name)},{value}]")
        dataclasses = sys.modules.get("dataclasses")
        if dataclasses is not None and dataclasses.is_dataclass(v):
            fields = [
                f"[{_enc(f.name)},{self.item('.%s', f.name, getattr(v, f.name), depth)}]"
                for f in dataclasses.fields(v)
                if hasattr(v, f.name)
            ]
            return self.classed(kind, "dataclass", _seq(fields))
        pathlib = sys.modules.get("pathlib")
        if pathlib is not None and isinstance(v, pathlib.PurePath):
            posix = v.as_posix()
            posix = self.strip(posix) if self.strip is not None else posix
            return _tag("path", f"[{_enc(kind.__name__)},{_enc(posix)}]")
        re = sys.modules.get("re")
        if re is not None and isinstance(v, re.Pattern):
            pattern = self.item("%s", ".pattern", v.pattern, depth)
            return _tag("re", f"[{pattern},{v.flags}]")
        collections = sys.modules.get("collections")
        if collections is not None and isinstance(v, collections.deque):
            items = [self.item("[%d]", i, x, depth) for i, x in enumerate(v)]
            maxlen = "null" if v.maxlen is None else str(v.maxlen)
            return self.classed(kind, "deque", f"[{_seq(items)},{maxlen}]")
        for base, plain in ((int, int.__int__), (float, float.__float__), (str, str.__str__)):
            if isinstance(v, base):  # e.g. numpy.float64
                return self.classed(kind, "value", self.walk(plain(v), depth))
        if isinstance(v, types.SimpleNamespace):
            return self.state(v, kind, depth)
        module = kind.__module__
        if isinstance(module, str) and _top(module) in _STDLIB:
            text = repr(v)  # datetime, Decimal, UUID, ...
            if " at 0x" not in text and " object at " not in text:
                return _tag("repr", _enc(f"{module}.{text}"))
        if self.walkable(kind):
            return self.state(v, kind, depth)
        return self.fail(v, "has no stable representation")

    def mapping(self, v: dict, kind: type, depth: int) -> str:
        """A dict as its pairs sorted by key text (then by value text: keys of one text)."""
        if self.strict:
            pairs = [
                (self.item("[%r]", k, k, depth), self.item("[%r]", k, x, depth))
                for k, x in v.items()
            ]
        else:
            walk = self.walk
            pairs = [(walk(k, depth), walk(x, depth)) for k, x in v.items()]
        pairs.sort()
        body = "[" + ",".join([f"[{k},{x}]" for k, x in pairs]) + "]"
        return _tag("dict", body) if kind is dict else self.classed(kind, "dict", body)

    def state(self, v: Any, kind: type, depth: int) -> str:
        attrs = [
            f"[{_enc(name)},{self.item('.%s', name, x, depth)}]"
            for name, x in _object_state(v, kind)
        ]
        return self.classed(kind, "object", _seq(attrs))


def canonical_json(value: Any) -> str:
    """A JSON text of `value` that is the same in every process and on every machine.

    For run keys: sets are sorted, dict keys sorted (int and str keys stay distinct, as do
    tuples and lists), floats are their repr, functions and classes are named by
    `module.qualname`, dataclasses (loaders among them) and plain objects by their class's
    name and fields. Raises TypeError for a value that has no such form (an object whose
    state Python cannot see, like a lock or a NumPy array).
    """
    return _Canon(strict=True).text(value)


def untracked_parts(parts: dict[str, str]) -> list[str]:
    """Names of fingerprint parts whose value Pivot could not fully track, for a warning."""
    return sorted(name for name, value in parts.items() if value.startswith(UNTRACKED))


# --- resolving what the code references -------------------------------------------------

Key = tuple[str, "str | None", str]  # (kind, defining file or None, qualified name)


class _Info:
    """What one function or class contributes: its own parts and project objects it uses."""

    __slots__ = ("children", "parts")

    def __init__(self) -> None:
        self.parts: list[tuple[Key, str]] = []
        self.children: list[Any] = []

    def extend(self, other: _Info) -> None:
        self.parts.extend(other.parts)
        self.children.extend(other.children)


class _SourceModule:
    """A project module known only by its source (imported by code that has not run yet)."""

    __slots__ = ("file", "folder")

    def __init__(self, file: str | None, folder: str | None) -> None:
        self.file = file  # module.py or package/__init__.py; None for a namespace package
        self.folder = folder  # the package's folder; None for a plain module


class _SourceDef:
    """A module-level def or class of a `_SourceModule`: its index entry stands in for it."""

    __slots__ = ("entry", "file")

    def __init__(self, file: str, entry: Entry) -> None:
        self.file = file
        self.entry = entry


def _local_imports(imports: tuple[Import, ...]) -> dict[str, list[Import]] | None:
    if not imports:
        return None
    by_name: dict[str, list[Import]] = {}
    for binding in imports:
        by_name.setdefault(binding[0], []).append(binding)
    return by_name


class _Fingerprinter:
    """Per-project-root caches and resolution rules."""

    def __init__(self, root: pathlib.Path) -> None:
        absolute = os.path.abspath(root)
        real = os.path.realpath(root)
        self.roots = sorted({absolute, real}, key=len, reverse=True)
        self.prefixes = [r.rstrip(os.sep) + os.sep for r in self.roots]
        # Interpreter folders (a venv or conda env inside the project) are not project code.
        envs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, _PIVOT_PKG}
        self.excluded = [
            os.path.abspath(p) + os.sep
            for p in envs
            if any((os.path.abspath(p) + os.sep).startswith(r) for r in self.prefixes)
        ]
        pivot_dir = os.path.join(absolute, CACHE_SUBDIR[0])
        self.cache_dir = os.path.join(absolute, *CACHE_SUBDIR) if os.path.isdir(pivot_dir) else None
        self.results: dict[int, tuple[Any, dict[str, str]]] = {}
        self.infos: dict[int, tuple[Any, _Info]] = {}
        self.homes: dict[int, tuple[type, tuple[str, dict | None] | None]] = {}
        self.consts: dict[int, tuple[Any, str | None]] = {}
        self.project_files: dict[str, str | None] = {}
        self.labels: dict[str, str] = {}
        self.module_files: dict[tuple[str, str | None], str | None] = {}
        self.resolved: dict[tuple[int, str, str], tuple[dict, _Info]] = {}
        # Function-local imports and the modules they reach without running them.
        self.located: dict[tuple[str, str, int], _SourceModule | str | None] = {}
        self.source_modules: dict[tuple[str | None, str | None], _SourceModule] = {}
        self.source_defs: dict[tuple[str, str, str, tuple[int, ...]], _SourceDef] = {}
        self.source_names: dict[tuple[str, str, str, tuple[str, ...]], _Info] = {}
        self.source_chains: dict[tuple[str | None, str | None, tuple[str, ...]], _Info] = {}
        self.local_resolved: dict[tuple[int, str, str, tuple[Import, ...]], tuple[dict, _Info]]
        self.local_resolved = {}

    # project membership and names

    def rel(self, file: str) -> str | None:
        """The path of `file` relative to the project root when it is project code."""
        cached = self.project_files.get(file, _MISSING)
        if cached is not _MISSING:
            return cached
        rel = None
        if not file.startswith("<"):
            path = file if os.path.isabs(file) else os.path.abspath(file)
            if not any(path.startswith(e) for e in self.excluded):
                for prefix in self.prefixes:
                    if path.startswith(prefix):
                        rel = path[len(prefix) :]
                        break
            if rel is not None and _SKIP_DIRS.intersection(rel.split(os.sep)[:-1]):
                rel = None
        self.project_files[file] = rel
        return rel

    def label(self, file: str) -> str:
        """`lib.helpers` for `<root>/lib/helpers.py`: stable across clones."""
        label = self.labels.get(file)
        if label is None:
            rel = self.rel(file) or os.path.basename(file)
            label = os.path.splitext(rel)[0].replace(os.sep, ".")
            if label.endswith(".__init__"):
                label = label[: -len(".__init__")]
            self.labels[file] = label
        return label

    def render(self, key: Key, stage_file: str) -> str:
        kind, file, name = key
        if file is None or file == stage_file:
            return f"{kind}:{name}"
        return f"{kind}:{self.label(file)}.{name}"

    def is_project_module(self, module: types.ModuleType) -> bool:
        file = getattr(module, "__file__", None)
        if file:
            return self.rel(file) is not None
        paths = getattr(module, "__path__", None) or ()
        return any(self.rel(os.path.join(p, "__init__.py")) is not None for p in paths)

    def module_file(self, name: str, context: str | None) -> str | None:
        """The project file of a module no longer in sys.modules (Pivot drops them)."""
        cache_key = (name, context)
        if cache_key in self.module_files:
            return self.module_files[cache_key]
        rel = name.replace(".", os.sep)
        dirs = [os.path.dirname(context)] if context else []
        dirs += self.roots
        found = None
        for folder in dirs:
            for candidate in (rel + ".py", os.path.join(rel, "__init__.py")):
                path = os.path.join(folder, candidate)
                if os.path.isfile(path) and self.rel(path) is not None:
                    found = path
                    break
            if found:
                break
        self.module_files[cache_key] = found
        return found

    def class_home(self, cls: type, context: str | None) -> tuple[str, dict | None] | None:
        """(defining file, module globals or None) of a class."""
        hit = self.homes.get(id(cls))
        if hit is not None and hit[0] is cls:
            return hit[1]
        home = None
        prefix = cls.__qualname__ + "."
        for value in vars(cls).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            # co_qualname, not __qualname__: functools.wraps copies the latter onto wrappers
            # (e.g. the __repr__ of a dataclass is a wrapper defined in dataclasses.py).
            if (
                isinstance(value, types.FunctionType)
                and value.__code__.co_qualname.startswith(prefix)
                and not value.__code__.co_filename.startswith("<")
            ):
                home = (value.__code__.co_filename, value.__globals__)
                break
        if home is None:
            module = sys.modules.get(cls.__module__)
            file = getattr(module, "__file__", None)
            if file and self._defines(module, cls):
                home = (file, vars(module))
        if home is None:
            file = self.module_file(cls.__module__, context)
            home = (file, None) if file else None
        self.homes[id(cls)] = (cls, home)
        return home

    @staticmethod
    def _defines(module: Any, cls: type) -> bool:
        if "<locals>" in cls.__qualname__:
            return True
        obj = module
        for name in cls.__qualname__.split("."):
            obj = getattr(obj, name, None)
        return obj is cls

    # classification

    def third_party(self, module_name: str | None, info: _Info, context: str | None) -> None:
        if not module_name or not isinstance(module_name, str):
            return
        top = module_name.partition(".")[0]
        if top in _STDLIB or top == "pivot" or top.startswith("_pivot_pipeline_"):
            return
        module = sys.modules.get(top)
        if module is not None:
            if self.is_project_module(module):
                return
        elif self.module_file(top, context):
            return
        for name, version in _dists(top):
            info.parts.append((("dist", None, name), version))

    def classify(self, obj: Any, const_key: Key | None, info: _Info, context: str | None) -> None:
        """Record what a referenced object contributes to `info`."""
        if isinstance(obj, types.ModuleType):
            if not self.is_project_module(obj):
                self.third_party(obj.__name__, info, context)
            return
        if isinstance(obj, types.FunctionType):
            if self.rel(obj.__code__.co_filename) is not None:
                info.children.append(obj)  # its info follows its own __wrapped__
                return
            self.third_party(obj.__module__, info, context)
            wrapped = obj.__dict__.get("__wrapped__")  # a library's decorator on our code
            if wrapped is not None:
                self.classify(wrapped, None, info, context)
            return
        if isinstance(obj, type):
            module = obj.__module__
            top = _top(module)
            if top in _STDLIB or top == "pivot":
                return
            home = self.class_home(obj, context)
            if home is not None and self.rel(home[0]) is not None:
                info.children.append(obj)
            else:
                self.third_party(module, info, context)
            return
        if isinstance(obj, types.MethodType):
            self.classify(obj.__func__, None, info, context)
            return
        if isinstance(obj, functools.partial):
            self.classify(obj.func, None, info, context)
            if const_key is not None:
                args = self.part_value((obj.args, obj.keywords), info, context)
                info.parts.append((const_key, args))
            return
        kind = type(obj)
        if _top(kind.__module__) == "pivot":
            return  # e.g. the Pipeline object behind `@pipeline.register`
        wrapped = getattr(obj, "__dict__", {}).get("__wrapped__") if callable(obj) else None
        if wrapped is not None:
            self.classify(wrapped, None, info, context)
        if const_key is not None and wrapped is None and self.is_value(obj, kind, context):
            exprs = self.const_exprs(const_key)
            info.parts.append((const_key, self.part_value(obj, info, context, exprs)))
        if kind.__module__ != "builtins":
            self.classify(kind, None, info, context)
        elif callable(obj):
            self.third_party(getattr(obj, "__module__", None), info, context)

    def canonical(self, value: Any, info: _Info, context: str | None) -> tuple[str, bool]:
        """A canonical text of a constant, the same in every process and every clone, and
        whether part of it could not be tracked.

        Functions, classes and the classes of objects met inside are classified into `info`
        (e.g. a dispatch table of functions); instances of project (and standard library)
        classes are read through their `__dict__` / `__slots__`.
        """
        cacheable = type(value) in (tuple, list, dict, set, frozenset)
        if cacheable:
            hit = self.consts.get(id(value))
            if hit is not None and hit[0] is value:
                return hit[1]
        before = (len(info.parts), len(info.children))
        walker = _Canon(
            strict=False,
            name=_short_name,
            seen=lambda obj: self.classify(obj, None, info, context),
            walkable=lambda kind: self.walkable(kind, context),
            strip=self.strip_root,
        )
        found = (walker.text(value), walker.untracked)
        if cacheable and (len(info.parts), len(info.children)) == before:  # no side effects
            self.consts[id(value)] = (value, found)
        return found

    def is_value(self, obj: Any, kind: type, context: str | None) -> bool:
        """Whether a constant is data (a part of its own) rather than code.

        Callables count when they are objects of a plain project class, or objects with
        state (no `__name__` / `__qualname__` of their own, unlike functions, ufuncs, ...).
        """
        if not callable(obj) or self.walkable(kind, context):
            return True
        try:
            named = hasattr(obj, "__qualname__") or hasattr(obj, "__name__")
        except Exception:  # an odd __getattr__
            return False
        return not named

    def walkable(self, kind: type, context: str | None) -> bool:
        """Whether a constant of class `kind` is read through its state: a plain class of the
        project or the standard library. Third-party objects are left untracked (their
        distribution's version is a part): their state may hold caches, handles or ids."""
        if not _is_plain(kind):
            return False
        if _top(kind.__module__) in _STDLIB:
            return True
        home = self.class_home(kind, context)
        return home is not None and self.rel(home[0]) is not None

    def part_value(self, value: Any, info: _Info, context: str | None, exprs=()) -> str:
        """The value of a `const:` / `closure:` part: a hash of the canonical text (and of
        the normalised source expressions `exprs`), marked UNTRACKED when part of the value
        could not be seen."""
        text, untracked = self.canonical(value, info, context)
        if exprs:
            text = "\x1f".join((text, *exprs))
        return (UNTRACKED if untracked else "") + _hash(text)

    def const_exprs(self, key: Key) -> tuple[str, ...]:
        """Hashes of the normalised source expressions assigned to a module-level name.

        Only for names assigned something else than a literal (`CFG = Cfg(scale=2)`): an
        edit there counts even when the value itself cannot be tracked.
        """
        kind, file, name = key
        if kind != "const" or file is None:
            return ()
        index = _file_index(file, self.cache_dir)
        if index is None:
            return ()
        assigned = [b for b in index.bindings.get(name, ()) if b[0] == "const"]
        if not assigned or all(b[3] for b in assigned):
            return ()
        return tuple(sorted({b[2] for b in assigned}))

    def strip_root(self, text: str) -> str:
        for root in self.roots:
            if root in text:
                text = text.replace(root, "<root>")
        return text

    def resolve(self, ref: str, ns: dict, closure: dict | None, file: str, qual: str, info):
        """Follow a dotted name read by code defined in `file` (module globals `ns`)."""
        names = ref.split(".")
        root = names[0]
        if closure and root in closure:
            obj = closure[root]
            const_key: Key = ("closure", file, f"{qual}.{root}")
        else:
            # Many stages of one module read the same globals: resolve each name once.
            memo_key = (id(ns), ref, file)
            hit = self.resolved.get(memo_key)
            if hit is not None and hit[0] is ns:
                info.parts.extend(hit[1].parts)
                info.children.extend(hit[1].children)
                return
            obj = ns.get(root, _MISSING)
            if obj is _MISSING:
                return  # builtin, local or undefined
            sub = _Info()
            self.resolved[memo_key] = (ns, sub)
            self._follow(obj, names, ("const", file, root), file, sub)
            info.parts.extend(sub.parts)
            info.children.extend(sub.children)
            return
        self._follow(obj, names, const_key, file, info)

    def _follow(self, obj: Any, names: list[str], const_key: Key, file: str, info: _Info):
        for attr in names[1:]:
            if not isinstance(obj, types.ModuleType) or not self.is_project_module(obj):
                break
            nxt = vars(obj).get(attr, _MISSING)
            if nxt is _MISSING:
                break
            const_key = ("const", obj.__file__ or file, attr)
            obj = nxt
        self.classify(obj, const_key, info, file)

    # function-local imports, and the project modules they reach, read from source

    def source_module(self, folder: str, parts: list[str], namespace: bool):
        """The project module `<folder>/a/b.py` or package `<folder>/a/b/` for ["a", "b"].

        A folder without `__init__.py` counts (as a namespace package) only if `namespace`.
        """
        path = os.path.join(folder, *parts)
        file, package = path + ".py", None
        if not parts or not os.path.isfile(file):
            file, package = os.path.join(path, "__init__.py"), path
            if not os.path.isfile(file):
                if not namespace or not os.path.isdir(path):
                    return None
                file = None
        if self.rel(file or os.path.join(path, "__init__.py")) is None:
            return None
        module = self.source_modules.get((file, package))
        if module is None:
            module = self.source_modules[(file, package)] = _SourceModule(file, package)
        return module

    def locate(self, module: str, level: int, file: str) -> _SourceModule | str | None:
        """What `import <module>` (relative at `level`) in code of `file` would import.

        A project module read from its source (never run), the top-level name of a
        third-party module, or None (standard library, pivot, not found). Like Pivot's runs,
        the search starts in the function's folder; then the project root, then sys.path.
        """
        key = (file, module, level)
        found = self.located.get(key, _MISSING)
        if found is not _MISSING:
            return found
        folder = os.path.dirname(file)
        parts = module.split(".") if module else []
        found = None
        if level:
            for _ in range(level - 1):
                folder = os.path.dirname(folder)
            found = self.source_module(folder, parts, True)
        elif parts:
            top = parts[0]
            if top not in _STDLIB and top != "pivot" and not top.startswith("_pivot_pipeline_"):
                found = self._locate_absolute(parts, folder)
        self.located[key] = found
        return found

    def _locate_absolute(self, parts: list[str], folder: str) -> _SourceModule | str | None:
        folders = [folder, *(r for r in self.roots if r != folder)]
        for candidate in folders:
            found = self.source_module(candidate, parts, False)
            if found is not None:
                return found
        location = _spec_location(parts[0])  # elsewhere on sys.path: finds, never imports
        if location is not None:
            origin, paths = location
            home = paths[0] if paths else origin
            if home and self.rel(origin or os.path.join(home, "__init__.py")) is not None:
                return self.source_module(os.path.dirname(home), parts, True)
            return parts[0]
        for candidate in folders:  # a namespace package comes last, as in Python
            found = self.source_module(candidate, parts, True)
            if found is not None:
                return found
        return None

    def resolve_local(self, ref: str, imports: tuple[Import, ...], ns: dict, file: str, info):
        """Follow `ref`, read through an import in a function of `file` (module globals `ns`).

        The empty ref stands for the third-party modules the function imports. Memoised per
        module object like global names are: a function of a reloaded module sees edits.
        """
        key = (id(ns), file, ref, imports)
        hit = self.local_resolved.get(key)
        if hit is not None and hit[0] is ns:
            info.extend(hit[1])
            return
        sub = _Info()
        self.local_resolved[key] = (ns, sub)
        if not ref:
            self.import_dists(imports, file, sub)
        else:
            root, _, tail = ref.partition(".")
            rest = tuple(tail.split(".")) if tail else ()
            for binding in imports:
                if binding[0] == root:
                    self.follow_import(binding, rest, file, sub, 0)
        info.extend(sub)

    def import_dists(self, imports: tuple[Import, ...], file: str, info: _Info) -> None:
        """A third-party module imported by a function counts even where it is not read."""
        for _, module, _, level in imports:
            target = self.locate(module, level, file)
            if type(target) is str:
                for name, version in _dists(target):
                    info.parts.append((("dist", None, name), version))

    def follow_import(self, binding: Import, rest: tuple[str, ...], file: str, info, depth):
        """Follow `<name>.<rest>` where `<name>` is bound by the import `binding` in `file`."""
        _, module, attr, level = binding
        target = self.locate(module, level, file)
        if target is None:
            return
        if type(target) is str:
            for name, version in _dists(target):
                info.parts.append((("dist", None, name), version))
            return
        self.source_chain(target, (attr, *rest) if attr else rest, info, depth)

    def source_chain(self, module: _SourceModule, chain: tuple[str, ...], info: _Info, depth):
        """Follow the attribute chain `module.<chain>` through a module's source."""
        if not chain or depth > _MAX_DEPTH:
            return  # a module itself adds nothing
        index = _file_index(module.file, self.cache_dir) if module.file else None
        key = (module.file, index.digest if index else module.folder, chain)
        sub = self.source_chains.get(key)
        if sub is None:
            sub = self.source_chains[key] = _Info()
            name, rest = chain[0], chain[1:]
            if index is not None and (name in index.top or name in index.bindings):
                self.source_name(index, name, rest, sub, depth + 1)
            else:
                for _, _, module_name, _, level in index.stars if index is not None else ():
                    star = ("*", module_name, "", level)
                    self.follow_import(star, chain, index.path, sub, depth + 1)
                if module.folder is not None:
                    submodule = self.source_module(module.folder, [name], True)
                    if submodule is not None:
                        self.source_chain(submodule, rest, sub, depth + 1)
        info.extend(sub)

    def source_name(self, index: _FileIndex, name: str, rest: tuple[str, ...], info, depth):
        """Follow `<name>.<rest>` where `<name>` is a module-level name of a source file."""
        file = index.path
        key = (file, index.digest, name, rest)
        sub = self.source_names.get(key)
        if sub is None:
            sub = self.source_names[key] = _Info()
            for entry in index.top.get(name, ()):
                def_key = (file, entry[_HASH], entry[_QUAL], entry[_LINES])
                obj = self.source_defs.get(def_key)
                if obj is None:
                    obj = self.source_defs[def_key] = _SourceDef(file, entry)
                sub.children.append(obj)
            for binding in index.bindings.get(name, ()):
                if binding[0] == "import":
                    self.follow_import(binding[1:], rest, file, sub, depth + 1)
                    continue
                _, _, digest, is_literal, literal, refs = binding
                # A literal hashes as the same value read from a module that has run would.
                value = _hash(self.canonical(literal, sub, file)[0]) if is_literal else digest
                sub.parts.append((("const", file, name), value))
                for ref in refs:
                    self.source_ref(ref, index, None, sub, depth + 1)
        info.extend(sub)

    def source_ref(self, ref: str, index: _FileIndex, local, info: _Info, depth: int) -> None:
        """Follow a dotted name read by code of a source file.

        `local` maps names to the imports of a function's body, which shadow module names.
        A class's refs mix its methods' bodies with module scope: `local` is None and its
        imports are followed by `method_imports`.
        """
        root, _, tail = ref.partition(".")
        rest = tuple(tail.split(".")) if tail else ()
        bindings = local.get(root) if local else None
        if bindings:
            for binding in bindings:
                self.follow_import(binding, rest, index.path, info, depth)
        else:
            self.source_name(index, root, rest, info, depth)

    def method_imports(self, refs, local, file: str, info: _Info) -> None:
        """Follow the refs of a class that are bound by imports in its methods."""
        for ref in refs:
            root, _, tail = ref.partition(".")
            rest = tuple(tail.split(".")) if tail else ()
            for binding in local.get(root, ()):
                self.follow_import(binding, rest, file, info, 0)

    def source_info(self, obj: _SourceDef) -> _Info:
        """A def or class of a module that has not run: its entry and what its code reads."""
        info = _Info()
        entry, file = obj.entry, obj.file
        info.parts.append(((entry[_KIND], file, entry[_QUAL]), entry[_HASH]))
        index = _file_index(file, self.cache_dir)
        if index is None:
            return info
        local = _local_imports(entry[_IMPORTS])
        if local:
            self.import_dists(entry[_IMPORTS], file, info)
            if entry[_KIND] == "class":
                self.method_imports(entry[_HEADER], local, file, info)
        for ref in entry[_HEADER]:
            self.source_ref(ref, index, None, info, 0)
        for ref in entry[_BODY]:
            self.source_ref(ref, index, local, info, 0)
        return info

    # infos

    def info(self, obj: Any) -> _Info:
        hit = self.infos.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        if isinstance(obj, type):
            info = self.class_info(obj)
        elif type(obj) is _SourceDef:
            info = self.source_info(obj)
        else:
            info = self.func_info(obj)
        self.infos[id(obj)] = (obj, info)
        return info

    def func_info(self, func: types.FunctionType) -> _Info:
        info = _Info()
        code = func.__code__
        file = code.co_filename
        index = _file_index(file, self.cache_dir) if not file.startswith("<") else None
        entry = index.find_func(code) if index is not None else None
        qual = code.co_qualname  # where it is defined, even under functools.wraps
        names = _code_names(code)
        if entry is not None:
            digest, header, body = entry[_HASH], entry[_HEADER], entry[_BODY]
            if entry[_MATCH] == "<lambda>":
                qual = entry[_QUAL] if entry[_QUAL] != "<lambda>" else f"{qual}#{digest[:8]}"
        else:
            digest, header, body = _code_hash(code), (), tuple(sorted(names))
        info.parts.append((("func", file, qual), digest))
        closure = {}
        for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=False):
            try:
                closure[name] = cell.cell_contents
            except ValueError:  # not yet assigned
                continue
        if "<locals>" in qual and (func.__defaults__ or func.__kwdefaults__):
            # Defaults of a nested def are computed in its enclosing call, like a closure.
            defaults = (func.__defaults__, func.__kwdefaults__)
            value = self.part_value(defaults, info, file)
            info.parts.append((("closure", file, f"{qual}.__defaults__"), value))
        allowed = names.union(closure)
        ns = func.__globals__
        for ref in header:
            self.resolve(ref, ns, None, file, qual, info)
        imports = entry[_IMPORTS] if entry is not None else ()
        local = _local_imports(imports)
        if local:
            self.resolve_local("", imports, ns, file, info)
        for ref in body:
            root = ref.partition(".")[0]
            if local and root in local:
                # Bound by an import inside the function: it shadows the globals.
                self.resolve_local(ref, imports, ns, file, info)
            elif root in allowed:
                self.resolve(ref, ns, closure, file, qual, info)
        wrapped = func.__dict__.get("__wrapped__")
        if wrapped is not None:
            self.classify(wrapped, None, info, file)
        return info

    def class_info(self, cls: type) -> _Info:
        info = _Info()
        home = self.class_home(cls, None)
        if home is None:
            return info
        file, ns = home
        index = _file_index(file, self.cache_dir)
        entry = index.find_class(cls.__qualname__) if index is not None else None
        if entry is not None:
            digest, refs = entry[_HASH], entry[_HEADER]
        else:  # made by type(), namedtuple(), ...: its attributes stand in for the source
            digest, refs = self._class_fallback(cls, file), ()
        info.parts.append((("class", file, cls.__qualname__), digest))
        local = _local_imports(entry[_IMPORTS]) if entry is not None else None
        if local:  # imports inside methods
            self.import_dists(entry[_IMPORTS], file, info)
            self.method_imports(refs, local, file, info)
        if ns is not None and entry is not None:
            for ref in refs:
                self.resolve(ref, ns, None, file, cls.__qualname__, info)
            return info
        if entry is not None and index is not None:  # its module was dropped: read the source
            for ref in refs:
                self.source_ref(ref, index, None, info, 0)
        for base in cls.__bases__:
            self.classify(base, None, info, file)
        return info

    def _class_fallback(self, cls: type, file: str) -> str:
        scratch = _Info()
        out = []
        for name, value in sorted(vars(cls).items()):
            if isinstance(value, types.FunctionType):
                out.append(f"{name}={_code_hash(value.__code__)}")
            else:
                out.append(f"{name}={self.canonical(value, scratch, file)[0]}")
        return _hash("\n".join(out))

    # the stage

    def compute(self, func: Callable[..., Any]) -> dict[str, str]:
        target, wrappers = _unwrap(func)
        stage_file = target.__code__.co_filename
        top = _Info()
        for wrapper in wrappers:
            self.classify(wrapper, None, top, stage_file)
        top.children.append(target)
        values = self.reach(top, stage_file)
        # Two objects with one name (redefinitions, closures of one factory): keep both.
        return {name: _merge(vs) for name, vs in values.items()}

    def with_params(self, parts: dict[str, str], params: Any, stage_file: str) -> dict[str, str]:
        """`parts` joined by those of the functions and classes found in `params`."""
        top = _Info()
        self.canonical(params, top, stage_file)
        values = self.reach(top, stage_file)
        for name, value in parts.items():
            values.setdefault(name, set()).add(value)
        return {name: _merge(vs) for name, vs in values.items()}

    def reach(self, top: _Info, stage_file: str) -> dict[str, set[str]]:
        """The values of every part of `top` and of the code its children reach, by name."""
        values: dict[str, set[str]] = {}

        def add(parts: list[tuple[Key, str]]) -> None:
            for key, value in parts:
                values.setdefault(self.render(key, stage_file), set()).add(value)

        add(top.parts)
        stack = list(top.children)
        seen: set[int] = set()
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            info = self.info(obj)
            add(info.parts)
            stack.extend(info.children)
        return values


def _merge(values: set[str]) -> str:
    """One value for a part name met with several values (still marked when one is)."""
    if len(values) == 1:
        return next(iter(values))
    marked = any(v.startswith(UNTRACKED) for v in values)
    return (UNTRACKED if marked else "") + _hash("\n".join(sorted(values)))


def _unwrap(func: Any) -> tuple[types.FunctionType, list[Any]]:
    """The innermost Python function of a stage, and the wrappers around it."""
    wrappers = []
    obj = func
    for _ in range(100):
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
            continue
        if isinstance(obj, functools.partial):
            obj = obj.func
            continue
        wrapped = getattr(obj, "__dict__", {}).get("__wrapped__")
        if wrapped is None:
            break
        wrappers.append(obj)
        obj = wrapped
    if not isinstance(obj, types.FunctionType):
        raise TypeError(f"Cannot fingerprint {func!r}: it is not a Python function.")
    return obj, wrappers


_STATES: dict[str, _Fingerprinter] = {}
