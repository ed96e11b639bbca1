"""The index of a source file's defs and module-level names, found by code objects.

`file_index(path)` gives the `FileIndex` of a file: from memory (keyed by size, mtime,
ctime, inode and device, and only once the file is settled: see `_settled`), from the disk
cache (keyed by content), or parsed now. Only module-level defs and names are
indexed at first; methods, nested defs and inner lambdas are added when first asked for.
"""

from __future__ import annotations

import ast
import contextlib
import os
import time
from typing import TYPE_CHECKING

import blake3

from pivot import _racy
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

    def __init__(self, path: str, key: StatKey | None, digest: str) -> None:
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


# (size, mtime, ctime, inode, device) in ns: a same-size rewrite keeping the mtime, or a
# file put in place of another, still changes it.
StatKey = tuple[int, int, int, int, int]
FILES: dict[str, FileIndex] = {}
# A file changed less than this long ago may change again with the same stat key on a file
# system of coarse timestamps: its index is not trusted by its key, unless a racy marker
# of the project's tmp folder decides (`pivot._racy`).
_RACY_NS = 3_000_000_000
# The racy marker of each project tmp folder, made before the first `stat` it judges;
# forgotten with FILES (`forget`), so that a long-lived process judges each run afresh.
_MARKERS: dict[str, _racy.Marker] = {}
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


def forget() -> None:
    """Forget every index held in memory, and the racy markers that judged them."""
    FILES.clear()
    _MARKERS.clear()


def _made(cache_dir: str | None) -> tuple[int, int] | None:
    """The device and time of the racy marker of the tmp folder holding `cache_dir`."""
    if not cache_dir:
        return None
    folder = os.path.dirname(cache_dir)
    marker = _MARKERS.get(folder)
    if marker is None:
        marker = _MARKERS[folder] = _racy.Marker(folder)
    return marker.made()


def _settled(made: tuple[int, int] | None, st: os.stat_result) -> bool:
    """Whether the file of `st` changed early enough that its stat key proves its content
    (a change within the same clock tick as the `stat` could keep the key)."""
    settled = _racy.before(made, st)
    if settled is None:  # no marker for it: the wall-clock rule
        settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS
    return settled


def _stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _file_index(path: str, cache_dir: str | None) -> FileIndex | None:
    index = FILES.get(path)
    if index is not None and index.key is not None:
        try:
            if _stat_key(os.stat(path)) == index.key:
                return index
        except OSError:
            return None
    made = _made(cache_dir)  # before the `fstat` it judges
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            with open(fd, "rb", closefd=False) as fh:
                source = fh.read()
        finally:
            os.close(fd)
    except OSError:
        return None
    key = _stat_key(st) if _settled(made, st) else None
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
