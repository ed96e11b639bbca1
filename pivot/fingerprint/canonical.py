"""Canonical text of Python values: the same in every process and on every machine.

Run keys encode params and loaders with `canonical_json` (strict: a value without a stable
form is an error). Fingerprints encode constants with `Canon` in lenient mode: such a value
stands as its type's name and the part is marked `UNTRACKED`. Also the small helpers both
sides share (`text_hash`, the standard library's module names).
"""

from __future__ import annotations

import functools
import json
import sys
import types
from typing import TYPE_CHECKING, Any

import blake3

if TYPE_CHECKING:
    from collections.abc import Callable

# The value of a part whose constant Pivot cannot fully see starts with this marker.
UNTRACKED = "untracked:"
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__", "__main__"}
MAX_DEPTH = 50
_NODE_BUDGET = 200_000  # values bigger than this are not walked
_BIG_INT = 2**63
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes made by a `class` statement
_PY_SUFFIXES = (".py", ".pyc", ".pyw")
# Classes whose objects hold the state of running machinery, not values: names from
# per-process counters ("Thread-3", "ThreadPoolExecutor-0_0"), thread idents, process ids,
# file descriptor numbers. Such an object (of a subclass too) has no stable form.
_RUNTIME_CLASSES = (
    ("threading", "Thread"),
    ("concurrent.futures", "Executor"),
    ("multiprocessing.process", "BaseProcess"),
    ("multiprocessing.pool", "Pool"),
    ("multiprocessing.queues", "Queue"),
    ("multiprocessing.queues", "SimpleQueue"),
    ("multiprocessing.connection", "_ConnectionBase"),
    ("selectors", "BaseSelector"),
    ("subprocess", "Popen"),
)
_CALLABLE_KINDS = (
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
    types.MethodWrapperType,
)


def top_module(module: Any) -> str:
    """The top-level package of a dotted module name ("" for a non-string)."""
    return module.partition(".")[0] if isinstance(module, str) else ""


def text_hash(text: str) -> str:
    """BLAKE3 hex digest of a text (lone surrogates allowed)."""
    return blake3.blake3(text.encode("utf-8", "surrogatepass")).hexdigest()


class _TooLarge(Exception):
    """Raised when a value has more than `_NODE_BUDGET` nodes."""


def _type_label(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def dotted_name(obj: Any) -> str:
    """`module.qualname` of a function or class: the same in every process and clone."""
    module = getattr(obj, "__module__", None)
    if module is None:
        module = getattr(getattr(obj, "__objclass__", None), "__module__", None) or "?"
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    return f"{module}.{qual}"


def short_name(obj: Any) -> str:
    """The qualname alone: fingerprints track the code of project objects separately."""
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")


def is_plain(kind: type) -> bool:
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


def is_runtime(kind: type) -> bool:
    """True for a thread, a process, a pool of either, a queue or pipe between processes, a
    selector or a child process (`_RUNTIME_CLASSES`; a class whose module is not loaded
    cannot be one)."""
    for module, name in _RUNTIME_CLASSES:
        base = getattr(sys.modules.get(module), name, None)
        if isinstance(base, type) and issubclass(kind, base):
            return True
    return False


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


class Canon:
    """Writes a value as JSON text that is the same in every process and clone.

    Sets are sorted and dicts sorted by key; tuples and lists, int and str keys stay
    distinct; floats are their repr; functions and classes are named, dataclasses, enums and
    plain objects (state in `__dict__` / `__slots__`) carry their class's name and fields.
    Every JSON object in the text is a tag (`{"dict": ...}`, `{"tuple": ...}`, ...), so no
    two different values share one. Cycles become `{"backref": levels up}`.

    A value without such a form (a thread, process, pool or pipe among them: `is_runtime`)
    raises TypeError when `strict`; otherwise it becomes `{"untracked": "<type>"}` and
    `untracked` is set, as does one whose reading raises (a lazy proxy that cannot
    connect): fingerprinting never stops a run.
    """

    def __init__(
        self,
        strict: bool,
        name: Callable[[Any], str] = dotted_name,
        seen: Callable[[Any], None] | None = None,
        walkable: Callable[[type], bool] = is_plain,
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
        if depth > MAX_DEPTH:
            return self.fail(v, "is nested too deeply")
        path[key] = depth
        try:
            if kind is list and not self.strict:  # the common case, first
                walk = self.walk
                return "[" + ",".join([walk(x, depth + 1) for x in v]) + "]"
            return self.compound(v, kind, depth + 1)
        except (_TooLarge, RecursionError):
            raise
        except Exception:  # an object whose attributes raise (a lazy proxy that cannot connect)
            if self.strict:
                raise
            return self.fail(v, "could not be read")
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
                return _tag("function", _enc(dotted_name(v)))
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
        if is_runtime(kind):
            return self.fail(
                v, "is a thread, process, pool or pipe: its state is the process's own"
            )
        module = kind.__module__
        if isinstance(module, str) and top_module(module) in STDLIB:
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
    return Canon(strict=True).text(value)


def untracked_parts(parts: dict[str, str]) -> list[str]:
    """Names of fingerprint parts whose value Pivot could not fully track, for a warning."""
    return sorted(name for name, value in parts.items() if value.startswith(UNTRACKED))


# The canonical text of loaders, by their class and field values: a run key names a
# loader per dep and output, and most are the same few (`PathOnly()`, `JSON(indent=2)`).
_LOADER_TEXTS: dict[tuple, str] = {}
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # a dataclass loader's field names
# Field values whose equality is identity of canonical text (not floats: 0.0 == -0.0).
_PLAIN = frozenset((str, int, bool, type(None)))
_MISSING = object()


def loader_text(loader: Any) -> str:
    """`canonical_json(loader)`, memoised for dataclass loaders whose fields hold only
    strings, integers, booleans or None (for them it depends on nothing else)."""
    kind = type(loader)
    names = _FIELD_NAMES.get(kind)
    if names is None:
        import dataclasses

        if not dataclasses.is_dataclass(kind):
            return canonical_json(loader)
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind))
    key: list[Any] = [kind]
    for name in names:
        value = getattr(loader, name, _MISSING)
        if type(value) not in _PLAIN:
            return canonical_json(loader)
        key += (name, type(value), value)
    text = _LOADER_TEXTS.get(memo := tuple(key))
    if text is None:
        text = canonical_json(loader)
        if text.startswith('{"dataclass":'):  # not a container or enum that is a dataclass
            _LOADER_TEXTS[memo] = text
    return text
