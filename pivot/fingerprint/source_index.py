"""The index of a source file's defs and module-level names, found by code objects.

`file_index(path)` gives the `FileIndex` of a file: from memory (keyed by mtime and size),
from the disk cache (keyed by content), or parsed now. Only module-level defs and names are
indexed at first; methods, nested defs and inner lambdas are added when first asked for.
"""

from __future__ import annotations

import ast
import contextlib
import os
from typing import TYPE_CHECKING

import blake3

from pivot.fingerprint import index_cache
from pivot.fingerprint.canonical import text_hash
from pivot.fingerprint.normal_ast import (
    Binding,
    Entry,
    Import,
    make_entry,
    module_bindings,
    parse,
    top_level_entries,
    walk_defs,
)

if TYPE_CHECKING:
    import types
    from collections.abc import Iterator


class FileIndex:
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
        self.stars: list[Import] = []
        self.lambda_spots: set[tuple[int, int]] = set()
        self.tree: ast.Module | None = None
        self.parsed = False
        self.nested_done = False
        self.lambdas_done = False

    def add(self, entry: Entry) -> None:
        for line in entry.lines:
            self.by_line.setdefault(line, []).append(entry)
        qual = entry.qualname
        if entry.kind == "class":
            self.classes[qual] = entry
        elif entry.match == "<lambda>":
            self.lambda_spots.add((entry.lines[0], entry.col))
        if "." not in qual and qual != "<lambda>":
            self.top.setdefault(qual, []).append(entry)

    def add_binding(self, binding: Binding) -> None:
        if type(binding) is Import and binding.attr == "*":
            self.stars.append(binding)
        else:
            self.bindings.setdefault(binding.name, []).append(binding)

    def get_tree(self) -> ast.Module | None:
        if not self.parsed:
            self.parsed = True
            try:
                with open(self.path, "rb") as fh:
                    self.tree = parse(fh.read())
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
        walk_defs(tree.body, "", 0, True, found)
        for node, qual, depth in found:
            if depth:
                self.add(make_entry(node, qual, node.name))

    def add_lambdas(self) -> None:
        self.lambdas_done = True
        tree = self.get_tree()
        if tree is None:
            return
        for node in ast.walk(tree):
            if type(node) is ast.Lambda and (node.lineno, node.col_offset) not in self.lambda_spots:
                self.add(make_entry(node, "<lambda>", "<lambda>", node.col_offset))

    def find_func(self, code: types.CodeType) -> Entry | None:
        """The entry of the def or lambda that compiled to `code`, matched by line and name."""
        line, name = code.co_firstlineno, code.co_name
        found = [e for e in self.by_line.get(line, ()) if e.match == name]
        if not found and not self.nested_done:
            self.add_nested()
            found = [e for e in self.by_line.get(line, ()) if e.match == name]
        if not found and name == "<lambda>" and not self.lambdas_done:
            self.add_lambdas()
            found = [e for e in self.by_line.get(line, ()) if e.match == name]
        if len(found) <= 1:
            return found[0] if found else None
        # Several lambdas on one line: depend on all of them.
        digest = text_hash("\n".join(sorted(e.digest for e in found)))
        header = tuple(sorted({r for e in found for r in e.header}))
        body = tuple(sorted({r for e in found for r in e.body}))
        imports = tuple(sorted({b for e in found for b in e.imports}))
        return found[0]._replace(digest=digest, header=header, body=body, col=0, imports=imports)

    def find_class(self, qualname: str) -> Entry | None:
        entry = self.classes.get(qualname)
        if entry is None and not self.nested_done:
            self.add_nested()
            entry = self.classes.get(qualname)
        return entry


FILES: dict[str, FileIndex] = {}
# While `checked_once` is active: the index given for each file so far (None: no index).
_CHECKED: dict[str, FileIndex | None] | None = None
_ABSENT = object()


@contextlib.contextmanager
def checked_once() -> Iterator[None]:
    """Within the block, each file's index is checked against the file (its `stat`) the
    first time it is asked for and then given as it was: a plan fingerprints thousands of
    functions of a few files, one `stat` per function otherwise. Nested blocks are one."""
    global _CHECKED
    if _CHECKED is not None:
        yield
        return
    _CHECKED = {}
    try:
        yield
    finally:
        _CHECKED = None


def file_index(path: str, cache_dir: str | None) -> FileIndex | None:
    """The index of a source file: from memory, from the disk cache, or parsed now."""
    checked = _CHECKED
    if checked is None:
        return _file_index(path, cache_dir)
    index = checked.get(path, _ABSENT)
    if index is _ABSENT:
        index = checked[path] = _file_index(path, cache_dir)
    return index  # type: ignore[return-value]


def _file_index(path: str, cache_dir: str | None) -> FileIndex | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    index = FILES.get(path)
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
    index = FileIndex(path, key, digest)
    stored = index_cache.load(cache_dir, path, digest) if cache_dir else None
    if stored is None:
        index.parsed = True
        index.tree = parse(source)
        entries: list[Entry] = []
        bindings: list[Binding] = []
        if index.tree is not None:
            entries = top_level_entries(index.tree)
            module_bindings(index.tree.body, bindings)
            if cache_dir:
                index_cache.store(cache_dir, path, digest, entries, bindings)
    else:
        entries, bindings = stored
    for entry in entries:
        index.add(entry)
    for binding in bindings:
        index.add_binding(binding)
    FILES[path] = index
    return index
