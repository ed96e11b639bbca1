"""The normalised AST of a source file's defs, classes and module-level names.

A def, class or lambda becomes an `Entry`: a hash of its AST with positions, docstrings,
comments, formatting and its own name left out, and the dotted names its code reads. The
module-level imports and assignments of a file become `Import` and `Const` bindings, so that
a module can be followed through its source without running it.
"""

from __future__ import annotations

import ast
import contextlib
from typing import Any, NamedTuple

from pivot.fingerprint.canonical import text_hash


class Import(NamedTuple):
    """One name bound by an import statement.

    `import a.b` binds `a` to module "a"; `import a.b as c` binds `c` to module "a.b";
    `from ..a import b` binds `b` to attribute "b" of module "a" at level 2.
    """

    name: str
    module: str
    attr: str  # "" for `import ...`; "*" for a star import
    level: int


class Entry(NamedTuple):
    """One def, class or lambda of a source file."""

    kind: str  # "func" or "class"
    match: str  # what the code object's co_name must equal ("<lambda>" for lambdas)
    qualname: str
    digest: str  # hash of the normalised AST
    header: tuple[str, ...]  # dotted names read by decorators, defaults, annotations
    body: tuple[str, ...]  # dotted names read by the body (a class's are in `header`)
    lines: tuple[int, ...]  # the def's line, and its first decorator's when it differs
    col: int  # column of a lambda (0 otherwise)
    imports: tuple[Import, ...]  # names bound by import statements inside the body


class Const(NamedTuple):
    """A module-level name assigned a value."""

    name: str
    digest: str  # hash of the normalised assignment
    is_literal: bool
    literal: Any  # the value, when `is_literal` (what `ast.literal_eval` gives)
    refs: tuple[str, ...]  # dotted names read by the value expression


Binding = Import | Const

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
DOC_HOLDERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
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
            if field == "body" and cls in DOC_HOLDERS:
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
                found.append(Import(alias.asname, alias.name, "", 0))
            else:
                top = alias.name.partition(".")[0]
                found.append(Import(top, top, "", 0))
    else:
        for alias in node.names:
            found.append(
                Import(alias.asname or alias.name, node.module or "", alias.name, node.level)
            )
    return found


def make_entry(node: Any, qualname: str, match: str, col: int = 0) -> Entry:
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
    return Entry(
        kind,
        match,
        qualname,
        text_hash(text),
        _prune(header),
        _prune(body),
        tuple(lines),
        col,
        bound,
    )


def walk_defs(stmts: list[Any], prefix: str, depth: int, nested: bool, found: list) -> None:
    """Collect (node, qualname, depth) of defs and classes reachable through statements."""
    for stmt in stmts:
        cls = type(stmt)
        if cls in DOC_HOLDERS:
            qualname = prefix + stmt.name
            found.append((stmt, qualname, depth))
            if nested:
                sub = qualname + ("." if cls is _ClassDef else ".<locals>.")
                walk_defs(stmt.body, sub, depth + 1, nested, found)
            continue
        for field in _BLOCK_FIELDS:
            block = getattr(stmt, field, None)
            if type(block) is list and block:
                walk_defs(block, prefix, depth, nested, found)


def top_level_entries(tree: ast.Module) -> list[Entry]:
    """Entries of module-level defs, classes and `name = lambda ...` assignments."""
    found: list = []
    walk_defs(tree.body, "", 0, False, found)
    entries = [make_entry(node, qual, node.name) for node, qual, _ in found]
    for stmt in tree.body:
        value = getattr(stmt, "value", None)
        if type(value) is not _Lambda:
            continue
        targets = stmt.targets if type(stmt) is ast.Assign else [getattr(stmt, "target", None)]
        if len(targets) == 1 and type(targets[0]) is _Name:
            entries.append(make_entry(value, targets[0].id, "<lambda>", value.col_offset))
    return entries


def _target_names(target: Any, found: list[str]) -> None:
    if type(target) is _Name:
        found.append(target.id)
    elif type(target) in (ast.Tuple, ast.List):
        for item in target.elts:
            _target_names(item, found)
    elif type(target) is ast.Starred:
        _target_names(target.value, found)


def module_bindings(stmts: list[Any], found: list[Binding]) -> None:
    """Imports and assigned values of module-level names (defs and classes are entries)."""
    for stmt in stmts:
        cls = type(stmt)
        if cls in DOC_HOLDERS:
            continue
        if cls is _Import or cls is _ImportFrom:
            found.extend(_import_bindings(stmt))
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
            digest = text_hash("\x1f".join(out))
            for name in names:
                found.append(Const(name, digest, is_literal, literal, _prune(refs)))
            continue
        for field in _BLOCK_FIELDS:
            block = getattr(stmt, field, None)
            if type(block) is list and block:
                module_bindings(block, found)


def parse(source: bytes) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None
