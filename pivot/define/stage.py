"""Dep / Out markers and the stage specification read from a function's annotations."""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pivot.define.loaders import Loader, PathOnly
from pivot.errors import DefinitionError

PARAMS_ARG = "params"
SINGLE_OUT = ""


GLOB_CHARS = ("*", "?")


@dataclass(frozen=True)
class Dep:
    """Marks a parameter as a file the stage reads: `Annotated[T, Dep(path, loader)]`.

    Fan-in: a list of paths gives the argument a list of values, in that order; a path
    with `*` or `?` (a glob over the outputs of the project's stages, `**` for any folders)
    gives a dict of values by path, sorted by path."""

    path: str | tuple[str, ...]
    loader: Loader = field(default_factory=PathOnly)

    def __post_init__(self) -> None:
        if isinstance(self.path, list | tuple):
            paths = tuple(self.path)
            if not paths or not all(isinstance(p, str) for p in paths):
                raise DefinitionError(
                    f"pivot.Dep({list(paths)!r}): a list of deps needs at least one path, and "
                    f"each must be a string."
                )
            object.__setattr__(self, "path", paths)


def is_glob(path: str) -> bool:
    return any(map(path.__contains__, GLOB_CHARS))


@dataclass(frozen=True)
class Out:
    """Marks a returned value as a file the stage writes: `Annotated[T, Out(path, loader)]`."""

    path: str
    loader: Loader = field(default_factory=PathOnly)


LIST, GLOB, MATCH = "list", "glob", "match"


class Artifact(NamedTuple):
    """A dep or out of a stage: argument or result key, declared and project paths.
    `group` marks fan-in deps: one of a `LIST`, a `GLOB` pattern not yet expanded, or a
    `MATCH` of one (the argument gets a list, or a dict by path)."""

    key: str
    declared: str
    path: str
    loader: Loader
    group: str = ""
    mark: Dep | Out | None = None  # as declared: a pivot.Metric or pivot.Plot is shown by
    # `pivot metrics` / `pivot plots`


@dataclass
class StageSpec:
    """One registered stage, with every path made project-relative."""

    pipeline: str
    name: str
    func: Any
    source: pathlib.Path
    workdir: pathlib.Path
    deps: list[Artifact]
    outs: list[Artifact]
    params: Any = None
    single_out: bool = False
    outs_as_args: bool = False  # outs passed to the function as paths, which it writes
    resources: dict[str, float | str] = field(default_factory=dict)  # for a cluster executor
    # `pipeline/name` (asked for many times per stage by a run: computed once, not through
    # a `cached_property`, whose first read takes a lock)
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.id = f"{self.pipeline}/{self.name}"

    def params_dict(self) -> dict[str, Any]:
        return params_as_dict(self.params)


def params_as_dict(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    if isinstance(params, dict):
        return dict(params)
    raise TypeError(f"params must be a dict or a dataclass instance, not {type(params).__name__}")


# The type of `Annotated[...]` aliases: `typing.get_origin(x) is Annotated` exactly when x is
# an instance of it, and this check is the one a registration makes per annotation.
_ANNOTATED = type(typing.Annotated[int, None])


def _marker(hint: Any, kind: type) -> Any:
    if isinstance(hint, _ANNOTATED):
        for meta in hint.__metadata__:
            if isinstance(meta, kind):
                return meta
    return None


def parameter_names(func: Any) -> list[str]:
    """The names of `func`'s parameters, in `inspect.signature`'s order; read straight from
    the code object of a plain function (a stage registration's common case: thousands of
    them in a big project), through `inspect.signature` for anything else."""
    code = getattr(func, "__code__", None)
    if (
        type(func) is not types.FunctionType
        or "__wrapped__" in func.__dict__
        or "__signature__" in func.__dict__
        or code is None
    ):
        return list(inspect.signature(func).parameters)
    names = code.co_varnames
    positional, keyword = code.co_argcount, code.co_kwonlyargcount
    order = list(names[:positional])
    rest = positional + keyword
    if code.co_flags & inspect.CO_VARARGS:
        order.append(names[rest])
        rest += 1
    order += names[positional : positional + keyword]
    if code.co_flags & inspect.CO_VARKEYWORDS:
        order.append(names[rest])
    return order


def _type_hints(func: Any) -> dict[str, Any]:
    """`typing.get_type_hints(func, include_extras=True)`. When every annotation of a plain
    function is a class or `Annotated[class, ...]` (a stage's usual
    `Annotated[pathlib.Path, pivot.Dep(...)]`), that walk returns each unchanged (there is no
    forward reference to evaluate), so they are taken as they are."""
    if type(func) is types.FunctionType and not getattr(func, "__no_type_check__", None):
        annotations = func.__annotations__
        hints = {}
        for name, value in annotations.items():
            if value is None:
                value = type(None)
            elif type(value) is not type and not _annotated_class(value):
                return typing.get_type_hints(func, include_extras=True)
            hints[name] = value
        return hints
    return typing.get_type_hints(func, include_extras=True)


def _annotated_class(value: Any) -> bool:
    """Whether `value` is `Annotated[C, ...]` of a class `C` (no forward reference in it)."""
    if not isinstance(value, _ANNOTATED):
        return False
    origin = value.__origin__
    return type(origin) is type and value.__args__ == (origin,)


def read_signature(func: Any, where: str) -> tuple[dict[str, Dep], dict[str, Out], bool, Any]:
    """Deps by argument, outs by key, whether the return is a single Out, params type."""
    try:
        hints = _type_hints(func)
    except Exception as exc:
        raise DefinitionError(f"Cannot read the annotations of {where}: {exc}") from exc
    deps: dict[str, Dep] = {}
    params_type = None
    for name in parameter_names(func):
        if name == PARAMS_ARG:
            params_type = hints.get(name)
            continue
        dep = _marker(hints.get(name), Dep)
        if dep is None:
            raise DefinitionError(
                f"The parameter {name!r} of {where} has no pivot.Dep annotation. Annotate it "
                f"as `{name}: Annotated[pathlib.Path, pivot.Dep('path', "
                f"pivot.loaders.PathOnly())]`, or name it `params` to receive the stage's params."
            )
        deps[name] = dep
    outs: dict[str, Out] = {}
    ret = hints.get("return")
    single = _marker(ret, Out)
    if single is not None:
        return deps, {SINGLE_OUT: single}, True, params_type
    if ret is not None and typing.is_typeddict(ret):
        for key, hint in typing.get_type_hints(ret, include_extras=True).items():
            out = _marker(hint, Out)
            if out is None:
                raise DefinitionError(
                    f"The field {key!r} of {ret.__name__}, the return type of {where}, has no "
                    f"pivot.Out annotation. Annotate it as `Annotated[T, pivot.Out('path')]`."
                )
            outs[key] = out
    return deps, outs, False, params_type


def default_params(params: Any, params_type: Any, where: str) -> Any:
    """The params object for a stage: the given one, or the dataclass's defaults."""
    if params is not None or params_type is None:
        return params
    if dataclasses.is_dataclass(params_type):
        try:
            return params_type()
        except TypeError as exc:
            raise DefinitionError(
                f"{where} takes params of type {params_type.__name__} but none were given and "
                f"it has no defaults ({exc}). Pass `params=` to pipeline.register()."
            ) from exc
    return None
