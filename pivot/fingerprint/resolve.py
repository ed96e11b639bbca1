"""The resolver of live objects: what a stage function's code reads, found in memory.

`Fingerprinter` (one per project root) reads a function's source index entry, follows the
names its code reads through the function's globals and closure, and classifies what it
finds: project functions and classes (followed in turn), constants (hashed through their
canonical text), third-party modules (their distribution's version). Imports inside
function bodies are handed to `ImportFollower`.
"""

from __future__ import annotations

import dis
import functools
import os
import sys
import types
from typing import TYPE_CHECKING, Any

from pivot.fingerprint.canonical import (
    STDLIB,
    UNTRACKED,
    Canon,
    is_plain,
    short_name,
    text_hash,
    top_module,
)
from pivot.fingerprint.dists import dists, dists_in, metadata_file
from pivot.fingerprint.index_cache import CACHE_SUBDIR
from pivot.fingerprint.normal_ast import Const
from pivot.fingerprint.parts import Info, Key
from pivot.fingerprint.source_imports import ImportFollower, SourceDef, local_imports
from pivot.fingerprint.source_index import file_index

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable

# The folder of the pivot package: never project code, even inside a project.
_PIVOT_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", ".pivot", "__pypackages__"})
_MISSING = object()
_SOURCE_SUFFIXES = (".py", ".pyw")
_GLOBAL_OPS = frozenset(
    {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME"}
)


def code_names(code: types.CodeType) -> set[str]:
    """The names `code` and the code nested in it may read as globals: their global and
    attribute names, less those only used as attributes where a local has that name (`obj.i`
    beside a loop's `i` is not the module global `i`)."""
    codes = [code]
    for item in codes:  # grows while it is walked
        for const in item.co_consts:
            if type(const) is types.CodeType:  # (a final type: no subclass to miss)
                codes.append(const)
    if len(codes) == 1:  # a stage function without nested code: the common case
        names = set(code.co_names)
        shadowed = names.intersection(code.co_varnames + code.co_cellvars)
    else:
        names = set().union(*(c.co_names for c in codes))
        local = {name for c in codes for name in (*c.co_varnames, *c.co_cellvars)}
        shadowed = names & local
    if shadowed:
        used = {
            ins.argval
            for c in codes
            for ins in dis.get_instructions(c)
            if ins.opname in _GLOBAL_OPS
        }
        names -= shadowed - used
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


def enclosing_locals(qual: str, ns: dict) -> frozenset[str] | None:
    """The local names of the functions enclosing the def or class `qual` (a qualname with
    `<locals>`), found through their code objects from the module globals `ns`.

    A nested def's decorators, defaults and annotations (and a nested class's body) are
    evaluated in those functions: a name local there is not the module global of that name
    (`def make(i): def stage() -> Out(f"{i}.txt")` next to a module-level `for i in ...`).
    None when an enclosing function cannot be found.
    """
    outer, _, _ = qual.rpartition(".<locals>.")
    names: set[str] = set()
    obj: Any = ns
    code = None
    for segment in outer.split("."):
        if segment == "<locals>":
            obj = None
            continue
        if code is not None and obj is None:  # a def or class nested in the code seen last
            found = [
                c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == segment
            ]
            if len(found) != 1:
                return None
            code = found[0]
            names.update(code.co_varnames, code.co_cellvars, code.co_freevars)
            continue
        obj = obj.get(segment) if isinstance(obj, dict) else vars(obj).get(segment)
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        while isinstance(obj, types.FunctionType) and "__wrapped__" in obj.__dict__:
            obj = obj.__dict__["__wrapped__"]
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            names.update(code.co_varnames, code.co_cellvars, code.co_freevars)
            obj = None
        elif not isinstance(obj, type):
            return None
    return frozenset(names) if code is not None else None


def code_hash(code: types.CodeType) -> str:
    """Fallback when no source is found: the bytecode, without names and positions."""
    out: list[str] = []
    _code_text(code, out)
    return text_hash("\x1f".join(out))


class Fingerprinter:
    """Per-project-root caches and resolution rules."""

    def __init__(self, root: pathlib.Path) -> None:
        absolute = os.path.abspath(root)
        real = os.path.realpath(root)
        self.roots = sorted({absolute, real}, key=len, reverse=True)
        self.prefixes = [r.rstrip(os.sep) + os.sep for r in self.roots]
        # Interpreter folders (a venv or conda env inside the project) are not project code.
        envs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, _PIVOT_PKG}
        self.interpreter = [os.path.abspath(p).rstrip(os.sep) + os.sep for p in envs]
        self.excluded = [p for p in self.interpreter if any(p.startswith(r) for r in self.prefixes)]
        pivot_dir = os.path.join(absolute, CACHE_SUBDIR[0])
        self.cache_dir = os.path.join(absolute, *CACHE_SUBDIR) if os.path.isdir(pivot_dir) else None
        self.results: dict[int, tuple[Any, dict[str, str]]] = {}
        self.infos: dict[int, tuple[Any, Info]] = {}
        self.homes: dict[int, tuple[type, tuple[str, dict | None] | None]] = {}
        self.consts: dict[int, tuple[Any, str | None]] = {}
        self.project_files: dict[str, str | None] = {}
        self.labels: dict[str, str] = {}
        self.module_files: dict[tuple[str, str | None], str | None] = {}
        self.resolved: dict[tuple[int, str, str], tuple[dict, Info]] = {}
        self.resolved_sets: dict[tuple[int, tuple[str, ...], str], tuple[dict, Info]] = {}
        self.sources = ImportFollower(self)  # imports inside function bodies

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
            elif rel is None:
                rel = self.outside(path)
        self.project_files[file] = rel
        return rel

    def outside(self, path: str) -> str | None:
        """The path of a module file relative to its `sys.path` folder when that folder is
        outside the project and neither the interpreter's (standard library, site-packages)
        nor an installed distribution's: code with no version Pivot could know, which
        counts as project code (by its source), labelled by its module path. A distribution
        counts only when its dist-info is in that folder: a namespace package's portion here
        is not the code of one installed elsewhere that shares its top-level name."""
        if not path.endswith(_SOURCE_SUFFIXES) or any(path.startswith(p) for p in self.interpreter):
            return None
        best = ""
        for entry in sys.path:
            if not isinstance(entry, str):
                continue
            folder = os.path.abspath(entry or os.curdir).rstrip(os.sep) + os.sep
            if path.startswith(folder) and len(folder) > len(best):
                best = folder
        if not best or _SKIP_DIRS.intersection(best.split(os.sep)):
            return None
        rel = path[len(best) :]
        parts = rel.split(os.sep)
        top = parts[0] if len(parts) > 1 else os.path.splitext(parts[0])[0]
        if (
            not top.isidentifier()
            or top in STDLIB
            or top == "pivot"
            or _SKIP_DIRS.intersection(parts[:-1])
            or dists_in(best[:-1] or os.sep, top)
        ):
            return None
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
            # by type(): `isinstance` reads `__class__`, which a proxy may raise for
            if issubclass(type(value), (staticmethod, classmethod)):
                value = value.__func__
            elif issubclass(type(value), property):
                value = value.fget
            # co_qualname, not __qualname__: functools.wraps copies the latter onto wrappers
            # (e.g. the __repr__ of a dataclass is a wrapper defined in dataclasses.py).
            if (
                issubclass(type(value), types.FunctionType)
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

    def third_party(self, module_name: str | None, info: Info, context: str | None) -> None:
        if not module_name or not isinstance(module_name, str):
            return
        top = module_name.partition(".")[0]
        if top in STDLIB or top == "pivot" or top.startswith("_pivot_pipeline_"):
            return
        module = sys.modules.get(top)
        if module is not None:
            if self.is_project_module(module):
                return
        elif self.module_file(top, context):
            return
        for name, version in dists(top):
            info.parts.append((("dist", None, name), version))

    def classify(self, obj: Any, const_key: Key | None, info: Info, context: str | None) -> None:
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
            top = top_module(module)
            if top in STDLIB or top == "pivot":
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
        if top_module(kind.__module__) == "pivot":
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

    def canonical(self, value: Any, info: Info, context: str | None) -> tuple[str, bool]:
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
        walker = Canon(
            strict=False,
            name=short_name,
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
        if not is_plain(kind):
            return False
        if top_module(kind.__module__) in STDLIB:
            return True
        home = self.class_home(kind, context)
        return home is not None and self.rel(home[0]) is not None

    def part_value(self, value: Any, info: Info, context: str | None, exprs=()) -> str:
        """The value of a `const:` / `closure:` part: a hash of the canonical text (and of
        the normalised source expressions `exprs`), marked UNTRACKED when part of the value
        could not be seen."""
        text, untracked = self.canonical(value, info, context)
        if exprs:
            text = "\x1f".join((text, *exprs))
        return (UNTRACKED if untracked else "") + text_hash(text)

    def const_exprs(self, key: Key) -> tuple[str, ...]:
        """Hashes of the normalised source expressions assigned to a module-level name.

        Only for names assigned something else than a literal (`CFG = Cfg(scale=2)`): an
        edit there counts even when the value itself cannot be tracked.
        """
        kind, file, name = key
        if kind != "const" or file is None:
            return ()
        index = file_index(file, self.cache_dir)
        if index is None:
            return ()
        assigned = [b for b in index.bindings.get(name, ()) if type(b) is Const]
        if not assigned or all(b.is_literal for b in assigned):
            return ()
        return tuple(sorted({b.digest for b in assigned}))

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
            sub = Info()
            self.resolved[memo_key] = (ns, sub)  # in place first: a name may lead back to it
            try:
                self._follow(obj, names, ("const", file, root), file, sub)
            except BaseException:  # never a half-filled entry for a later stage to trust
                del self.resolved[memo_key]
                raise
            info.parts.extend(sub.parts)
            info.children.extend(sub.children)
            return
        self._follow(obj, names, const_key, file, info)

    def resolve_globals(self, refs: tuple[str, ...], ns: dict, file: str, info: Info) -> None:
        """`resolve` of each of `refs` through the module globals `ns` alone: the functions
        of one module mostly read the same names, so the whole set is memoised too."""
        if not refs:
            return
        memo_key = (id(ns), refs, file)
        hit = self.resolved_sets.get(memo_key)
        if hit is None or hit[0] is not ns:
            sub = Info()
            for ref in refs:
                self.resolve(ref, ns, None, file, "", sub)
            hit = self.resolved_sets[memo_key] = (ns, sub)
        info.parts.extend(hit[1].parts)
        info.children.extend(hit[1].children)

    def _follow(self, obj: Any, names: list[str], const_key: Key, file: str, info: Info):
        for attr in names[1:]:
            if not isinstance(obj, types.ModuleType) or not self.is_project_module(obj):
                break
            nxt = vars(obj).get(attr, _MISSING)
            if nxt is _MISSING:
                break
            const_key = ("const", obj.__file__ or file, attr)
            obj = nxt
        self.classify(obj, const_key, info, file)

    # infos

    def info(self, obj: Any) -> Info:
        hit = self.infos.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        if isinstance(obj, type):
            info = self.class_info(obj)
        elif type(obj) is SourceDef:
            info = self.sources.source_info(obj)
        else:
            info = self.func_info(obj)
        self.infos[id(obj)] = (obj, info)
        return info

    def func_info(self, func: types.FunctionType) -> Info:
        info = Info()
        code = func.__code__
        file = code.co_filename
        index = file_index(file, self.cache_dir) if not file.startswith("<") else None
        entry = index.find_func(code) if index is not None else None
        qual = code.co_qualname  # where it is defined, even under functools.wraps
        names = code_names(code)
        if entry is not None:
            digest, header, body = entry.digest, entry.header, entry.body
            if entry.match == "<lambda>":
                qual = entry.qualname if entry.qualname != "<lambda>" else f"{qual}#{digest[:8]}"
        else:
            digest, header, body = code_hash(code), (), tuple(sorted(names))
        info.parts.append((("func", file, qual), digest))
        closure = {}
        for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=False):
            try:
                closure[name] = cell.cell_contents
            except ValueError:  # not yet assigned
                continue
        if func.__defaults__ or func.__kwdefaults__:
            # Computed when the def (or lambda) ran: in its enclosing call, like a closure, or
            # at import (`k=int(os.environ["K"])`), which the source does not show.
            defaults = (func.__defaults__, func.__kwdefaults__)
            value = self.part_value(defaults, info, file)
            info.parts.append((("closure", file, f"{qual}.__defaults__"), value))
        allowed = names.union(closure)
        ns = func.__globals__
        outer = enclosing_locals(code.co_qualname, ns) if "<locals>" in code.co_qualname else None
        if outer:
            header = tuple(ref for ref in header if ref.partition(".")[0] not in outer)
        self.resolve_globals(header, ns, file, info)
        imports = entry.imports if entry is not None else ()
        local = local_imports(imports)
        if local:
            self.sources.resolve_local("", imports, ns, file, info)
        global_refs = []
        for ref in body:
            root = ref.partition(".")[0]
            if local and root in local:
                # Bound by an import inside the function: it shadows the globals.
                self.sources.resolve_local(ref, imports, ns, file, info)
            elif root in closure:
                self.resolve(ref, ns, closure, file, qual, info)
            elif root in allowed:
                global_refs.append(ref)
        self.resolve_globals(tuple(global_refs), ns, file, info)
        wrapped = func.__dict__.get("__wrapped__")
        if wrapped is not None:
            self.classify(wrapped, None, info, file)
        return info

    def class_info(self, cls: type) -> Info:
        info = Info()
        home = self.class_home(cls, None)
        if home is None:
            return info
        file, ns = home
        index = file_index(file, self.cache_dir)
        entry = index.find_class(cls.__qualname__) if index is not None else None
        if entry is not None:
            digest, refs = entry.digest, entry.header
        else:  # made by type(), namedtuple(), ...: its attributes stand in for the source
            digest, refs = self._class_fallback(cls, file), ()
        info.parts.append((("class", file, cls.__qualname__), digest))
        if entry is not None:
            self.class_state(cls, file, info)
        local = local_imports(entry.imports) if entry is not None else None
        if local:  # imports inside methods
            self.sources.import_dists(entry.imports, file, info)
            self.sources.method_imports(refs, local, file, info)
        if ns is not None and entry is not None:
            outer = (
                enclosing_locals(cls.__qualname__, ns) if "<locals>" in cls.__qualname__ else None
            )
            for ref in refs:
                if not outer or ref.partition(".")[0] not in outer:
                    self.resolve(ref, ns, None, file, cls.__qualname__, info)
            return info
        if entry is not None and index is not None:  # its module was dropped: read the source
            for ref in refs:
                self.sources.source_ref(ref, index, None, info, 0)
        for base in cls.__bases__:
            self.classify(base, None, info, file)
        return info

    def class_state(self, cls: type, file: str, info: Info) -> None:
        """The values a class's code reads that its source does not show, computed when its
        `class` statement ran: its data attributes (`const:<Class>.<name>`; for a field
        of a dataclass, an attrs class or a pydantic model, what `field_values` finds) and
        the defaults of its methods, static and class methods and properties
        (`closure:<Class>.<method>.__defaults__`). Nested classes are followed."""
        prefix = cls.__qualname__ + "."
        for name, value in vars(cls).items():
            try:
                funcs = _code_attr(value)
            except Exception:  # an object whose attributes raise (a lazy proxy): data
                funcs = None
            if funcs is not None:
                for func in funcs:
                    code = func.__code__
                    if not code.co_qualname.startswith(prefix):
                        # defined elsewhere (a decorator's wrapper, `f = staticmethod(g)`):
                        # followed as a function, with its closure and defaults
                        self.classify(func, None, info, file)
                        if (
                            code.co_filename.startswith("<")
                            and (func.__defaults__ or func.__kwdefaults__)
                            and "__dataclass_fields__" not in vars(cls)  # class attributes
                        ):  # generated for the class (attrs' __init__: its fields' defaults)
                            defaults = (func.__defaults__, func.__kwdefaults__)
                            key = ("closure", file, f"{cls.__qualname__}.{name}.__defaults__")
                            info.parts.append((key, self.part_value(defaults, info, file)))
                    elif func.__defaults__ or func.__kwdefaults__:
                        defaults = (func.__defaults__, func.__kwdefaults__)
                        key = ("closure", file, f"{code.co_qualname}.__defaults__")
                        info.parts.append((key, self.part_value(defaults, info, file)))
            elif issubclass(type(value), type):
                self.classify(value, None, info, file)
            elif not (name[:1] == "_" and name[-1:] == "_") and name != "_abc_impl":
                # (dunder and enum's `_sunder_` names, abc's cache: the machinery's state)
                key = ("const", file, f"{cls.__qualname__}.{name}")
                info.parts.append((key, self.part_value(value, info, file)))
        try:
            fields = field_values(cls)
        except Exception:  # field objects whose attributes raise (a lazy proxy): untracked
            key = ("const", file, f"{cls.__qualname__}.<fields>")
            info.parts.append((key, UNTRACKED + text_hash("unreadable fields")))
            fields = []
        for name, value in fields:
            key = ("const", file, f"{cls.__qualname__}.{name}")
            info.parts.append((key, self.part_value(value, info, file)))

    def _class_fallback(self, cls: type, file: str) -> str:
        scratch = Info()
        out = []
        for name, value in sorted(vars(cls).items()):
            if isinstance(value, types.FunctionType):
                out.append(f"{name}={code_hash(value.__code__)}")
            else:
                out.append(f"{name}={self.canonical(value, scratch, file)[0]}")
        return text_hash("\n".join(out))

    # the stage

    def compute(self, func: Callable[..., Any]) -> dict[str, str]:
        target, wrappers = unwrap(func)
        stage_file = target.__code__.co_filename
        top = Info()
        for wrapper in wrappers:
            self.classify(wrapper, None, top, stage_file)
        top.children.append(target)
        self.owners(func, target, top)
        values = self.reach(top, stage_file)
        # Two objects with one name (redefinitions, closures of one factory): keep both.
        return {name: merge(vs) for name, vs in values.items()}

    def owners(self, func: Any, target: types.FunctionType, top: Info) -> None:
        """The object a bound-method stage (`pipeline.register(obj.method)`) is bound to:
        its state (walked like params) is read by the method through `self`; a part
        `closure:<method qualname>.__self__`."""
        obj = func
        for _ in range(100):
            if isinstance(obj, types.MethodType):
                key = (
                    "closure",
                    target.__code__.co_filename,
                    f"{target.__code__.co_qualname}.__self__",
                )
                value = self.part_value(obj.__self__, top, target.__code__.co_filename)
                top.parts.append((key, value))
                obj = obj.__func__
            elif isinstance(obj, functools.partial):
                obj = obj.func
            else:
                return

    def with_params(self, parts: dict[str, str], params: Any, stage_file: str) -> dict[str, str]:
        """`parts` joined by those of the functions and classes found in `params`."""
        top = Info()
        self.canonical(params, top, stage_file)
        values = self.reach(top, stage_file)
        for name, value in parts.items():
            values.setdefault(name, set()).add(value)
        return {name: merge(vs) for name, vs in values.items()}

    def files(self, func: Callable[..., Any], params: Any) -> set[str]:
        """The project source files whose code or constants the fingerprint of `func`
        (with `params`) reads, and the metadata files its distributions' versions were read
        from: the files an edit of which may change it."""
        target, wrappers = unwrap(func)
        stage_file = target.__code__.co_filename
        top = Info()
        for wrapper in wrappers:
            self.classify(wrapper, None, top, stage_file)
        top.children.append(target)
        self.owners(func, target, top)
        if params is not None:
            self.canonical(params, top, stage_file)
        found = {stage_file} if self.rel(stage_file) is not None else set()
        stack, seen = [top], set()
        while stack:
            info = stack.pop()
            for (kind, f, name), _ in info.parts:
                if f is not None:
                    if self.rel(f) is not None:
                        found.add(f)
                elif kind == "dist":  # where its version was read
                    meta = metadata_file(name)
                    if meta is not None:
                        found.add(meta)
            for child in info.children:
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append(self.info(child))
        return found

    def reach(self, top: Info, stage_file: str) -> dict[str, set[str]]:
        """The values of every part of `top` and of the code its children reach, by name."""
        values: dict[str, set[str]] = {}
        render = self.render
        pending = [top.parts]
        stack = list(top.children)
        seen: set[int] = set()
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            info = self.info(obj)
            pending.append(info.parts)
            stack.extend(info.children)
        for parts in pending:
            for key, value in parts:
                values.setdefault(render(key, stage_file), set()).add(value)
        return values


def field_values(cls: type) -> list[tuple[str, Any]]:
    """(field name, value) of what a library keeps of a class's fields off its attributes,
    made when its class statement ran: a dataclass field's `default_factory`; an attrs
    field's factory, converter and validator, and the default of a field left out of the
    `__init__` attrs writes (held by that `__init__`'s globals; another default is one of
    its parameters' defaults); a pydantic field's or private attribute's default,
    `default_factory` and constraints (held by its `FieldInfo` or `ModelPrivateAttr`). A
    library's fields are looked at only when that library is loaded."""
    own = vars(cls)
    found: list[tuple[str, Any]] = []
    dataclasses = sys.modules.get("dataclasses")
    fields = own.get("__dataclass_fields__")
    if dataclasses is not None and type(fields) is dict:
        for name, field in fields.items():
            factory = getattr(field, "default_factory", dataclasses.MISSING)
            if factory is not dataclasses.MISSING:
                found.append((name, factory))
    attr = sys.modules.get("attr")
    attributes = own.get("__attrs_attrs__")
    if attr is not None and isinstance(attributes, tuple):
        for field in attributes:
            default = getattr(field, "default", None)
            if isinstance(default, attr.Factory):
                default = (default.factory, default.takes_self)
            elif getattr(field, "init", True) or default is attr.NOTHING:
                default = None  # none, or the `__init__`'s default
            value = (default, getattr(field, "converter", None), getattr(field, "validator", None))
            if any(v is not None for v in value):  # (no `==`: a default may be an array)
                found.append((str(field.name), value))
    pydantic_core = sys.modules.get("pydantic_core")
    if pydantic_core is not None:
        undefined = getattr(pydantic_core, "PydanticUndefined", None)
        for holder in ("__pydantic_fields__", "__private_attributes__"):
            fields = own.get(holder)
            if type(fields) is not dict:
                continue
            for name, field in fields.items():
                default = getattr(field, "default", None)
                value = (
                    None if default is undefined else default,
                    getattr(field, "default_factory", None),
                    getattr(field, "metadata", None) or None,
                )
                if any(v is not None for v in value):  # (a required field: nothing kept)
                    found.append((str(name), value))
    return found


def _code_attr(value: Any) -> list[types.FunctionType] | None:
    """The Python functions behind a class attribute that is code (a method, a static or
    class method, a property, a decorated function); None for data."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    elif isinstance(value, property):
        return [
            f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType)
        ]
    elif isinstance(value, functools.cached_property):
        value = value.func
    elif not isinstance(value, types.FunctionType) and not (
        callable(value) and "__wrapped__" in getattr(value, "__dict__", {})
    ):
        return None
    found = []
    for _ in range(100):
        if isinstance(value, types.FunctionType):
            found.append(value)
        wrapped = getattr(value, "__dict__", {}).get("__wrapped__")
        if wrapped is None:
            break
        value = wrapped
    return found


def merge(values: set[str]) -> str:
    """One value for a part name met with several values (still marked when one is)."""
    if len(values) == 1:
        return next(iter(values))
    marked = any(v.startswith(UNTRACKED) for v in values)
    return (UNTRACKED if marked else "") + text_hash("\n".join(sorted(values)))


def unwrap(func: Any) -> tuple[types.FunctionType, list[Any]]:
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


STATES: dict[str, Fingerprinter] = {}
