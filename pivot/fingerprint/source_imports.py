"""Following imports made inside function bodies through source, without running modules.

`import rows` in a stage's body is looked up the way a Pivot run would find it (the
function's folder first, then the project root, then sys.path). A project module is read
from its source index: the names the function reads through the import, and what their code
reads in turn, give the same parts as module globals do; a third-party module gives its
`dist:` part.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pivot.fingerprint.canonical import MAX_DEPTH, STDLIB, text_hash
from pivot.fingerprint.dists import dists, spec_location
from pivot.fingerprint.normal_ast import Entry, Import
from pivot.fingerprint.parts import Info
from pivot.fingerprint.source_index import FileIndex, file_index

if TYPE_CHECKING:
    from pivot.fingerprint.resolve import Fingerprinter

_MISSING = object()


class SourceModule:
    """A project module known only by its source (imported by code that has not run yet)."""

    __slots__ = ("file", "folder")

    def __init__(self, file: str | None, folder: str | None) -> None:
        self.file = file  # module.py or package/__init__.py; None for a namespace package
        self.folder = folder  # the package's folder; None for a plain module


class SourceDef:
    """A module-level def or class of a `SourceModule`: its index entry stands in for it."""

    __slots__ = ("entry", "file")

    def __init__(self, file: str, entry: Entry) -> None:
        self.file = file
        self.entry = entry


def local_imports(imports: tuple[Import, ...]) -> dict[str, list[Import]] | None:
    """The imports of a function's body by the name they bind (None when there are none)."""
    if not imports:
        return None
    by_name: dict[str, list[Import]] = {}
    for binding in imports:
        by_name.setdefault(binding.name, []).append(binding)
    return by_name


class ImportFollower:
    """Per-project-root memos of the modules and names reached through local imports."""

    def __init__(self, project: Fingerprinter) -> None:
        self.project = project
        self.located: dict[tuple[str, str, int], SourceModule | str | None] = {}
        self.source_modules: dict[tuple[str | None, str | None], SourceModule] = {}
        self.source_defs: dict[tuple[str, str, str, tuple[int, ...]], SourceDef] = {}
        self.source_names: dict[tuple[str, str, str, tuple[str, ...]], Info] = {}
        self.source_chains: dict[tuple[str | None, str | None, tuple[str, ...]], Info] = {}
        self.local_resolved: dict[tuple[int, str, str, tuple[Import, ...]], tuple[dict, Info]]
        self.local_resolved = {}

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
        if self.project.rel(file or os.path.join(path, "__init__.py")) is None:
            return None
        module = self.source_modules.get((file, package))
        if module is None:
            module = self.source_modules[(file, package)] = SourceModule(file, package)
        return module

    def locate(self, module: str, level: int, file: str) -> SourceModule | str | None:
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
            if top not in STDLIB and top != "pivot" and not top.startswith("_pivot_pipeline_"):
                found = self._locate_absolute(parts, folder)
        self.located[key] = found
        return found

    def _locate_absolute(self, parts: list[str], folder: str) -> SourceModule | str | None:
        folders = [folder, *(r for r in self.project.roots if r != folder)]
        for candidate in folders:
            found = self.source_module(candidate, parts, False)
            if found is not None:
                return found
        location = spec_location(parts[0])  # elsewhere on sys.path: finds, never imports
        if location is not None:
            origin, paths = location
            home = paths[0] if paths else origin
            if home and self.project.rel(origin or os.path.join(home, "__init__.py")) is not None:
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
        sub = Info()
        self.local_resolved[key] = (ns, sub)
        if not ref:
            self.import_dists(imports, file, sub)
        else:
            root, _, tail = ref.partition(".")
            rest = tuple(tail.split(".")) if tail else ()
            for binding in imports:
                if binding.name == root:
                    self.follow_import(binding, rest, file, sub, 0)
        info.extend(sub)

    def import_dists(self, imports: tuple[Import, ...], file: str, info: Info) -> None:
        """A third-party module imported by a function counts even where it is not read."""
        for _, module, _, level in imports:
            target = self.locate(module, level, file)
            if type(target) is str:
                for name, version in dists(target):
                    info.parts.append((("dist", None, name), version))

    def follow_import(self, binding: Import, rest: tuple[str, ...], file: str, info, depth):
        """Follow `<name>.<rest>` where `<name>` is bound by the import `binding` in `file`."""
        _, module, attr, level = binding
        target = self.locate(module, level, file)
        if target is None:
            return
        if type(target) is str:
            for name, version in dists(target):
                info.parts.append((("dist", None, name), version))
            return
        self.source_chain(target, (attr, *rest) if attr else rest, info, depth)

    def source_chain(self, module: SourceModule, chain: tuple[str, ...], info: Info, depth):
        """Follow the attribute chain `module.<chain>` through a module's source."""
        if not chain or depth > MAX_DEPTH:
            return  # a module itself adds nothing
        index = file_index(module.file, self.project.cache_dir) if module.file else None
        key = (module.file, index.digest if index else module.folder, chain)
        sub = self.source_chains.get(key)
        if sub is None:
            sub = self.source_chains[key] = Info()
            name, rest = chain[0], chain[1:]
            if index is not None and (name in index.top or name in index.bindings):
                self.source_name(index, name, rest, sub, depth + 1)
            else:
                for star in index.stars if index is not None else ():
                    every = Import("*", star.module, "", star.level)
                    self.follow_import(every, chain, index.path, sub, depth + 1)
                if module.folder is not None:
                    submodule = self.source_module(module.folder, [name], True)
                    if submodule is not None:
                        self.source_chain(submodule, rest, sub, depth + 1)
        info.extend(sub)

    def source_name(self, index: FileIndex, name: str, rest: tuple[str, ...], info, depth):
        """Follow `<name>.<rest>` where `<name>` is a module-level name of a source file."""
        file = index.path
        key = (file, index.digest, name, rest)
        sub = self.source_names.get(key)
        if sub is None:
            sub = self.source_names[key] = Info()
            for entry in index.top.get(name, ()):
                def_key = (file, entry.digest, entry.qualname, entry.lines)
                obj = self.source_defs.get(def_key)
                if obj is None:
                    obj = self.source_defs[def_key] = SourceDef(file, entry)
                sub.children.append(obj)
            for binding in index.bindings.get(name, ()):
                if type(binding) is Import:
                    self.follow_import(binding, rest, file, sub, depth + 1)
                    continue
                # A literal hashes as the same value read from a module that has run would.
                value = binding.digest
                if binding.is_literal:
                    value = text_hash(self.project.canonical(binding.literal, sub, file)[0])
                sub.parts.append((("const", file, name), value))
                for ref in binding.refs:
                    self.source_ref(ref, index, None, sub, depth + 1)
        info.extend(sub)

    def source_ref(self, ref: str, index: FileIndex, local, info: Info, depth: int) -> None:
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

    def method_imports(self, refs, local, file: str, info: Info) -> None:
        """Follow the refs of a class that are bound by imports in its methods."""
        for ref in refs:
            root, _, tail = ref.partition(".")
            rest = tuple(tail.split(".")) if tail else ()
            for binding in local.get(root, ()):
                self.follow_import(binding, rest, file, info, 0)

    def source_info(self, obj: SourceDef) -> Info:
        """A def or class of a module that has not run: its entry and what its code reads."""
        info = Info()
        entry, file = obj.entry, obj.file
        info.parts.append(((entry.kind, file, entry.qualname), entry.digest))
        index = file_index(file, self.project.cache_dir)
        if index is None:
            return info
        local = local_imports(entry.imports)
        if local:
            self.import_dists(entry.imports, file, info)
            if entry.kind == "class":
                self.method_imports(entry.header, local, file, info)
        for ref in entry.header:
            self.source_ref(ref, index, None, info, 0)
        for ref in entry.body:
            self.source_ref(ref, index, local, info, 0)
        return info
