"""A stage's annotations are read as `typing.get_type_hints` reads them, whatever they hold
(the shortcut for plain `Annotated[class, ...]` annotations gives the very same hints).

No `from __future__ import annotations` here: the stages below must hold evaluated
annotations, as in a pipeline file without it."""

import functools
import pathlib
import typing
from typing import Annotated, TypedDict

import pytest

import pivot
from pivot.define.loaders import PathOnly
from pivot.define.stage import _type_hints


class Outs(TypedDict):
    table: Annotated[pathlib.Path, pivot.Out("table.csv", PathOnly())]


def _plain(
    src: Annotated[pathlib.Path, pivot.Dep("in.txt", PathOnly())],
) -> Annotated[pathlib.Path, pivot.Out("out.txt", PathOnly())]: ...


def _mixed(
    a: Annotated[pathlib.Path, pivot.Dep("a.txt", PathOnly())], n: int, flag: None = None
) -> Outs: ...


_ns: dict = {"Annotated": Annotated, "pathlib": pathlib, "pivot": pivot, "PathOnly": PathOnly}
exec(  # string annotations, as under `from __future__ import annotations`
    "def _strings(src: 'Annotated[pathlib.Path, pivot.Dep(\"a\", PathOnly())]') -> 'None': ...",
    _ns,
)
exec(  # a forward reference inside Annotated, and generic aliases
    "def _nested(x: Annotated['pathlib.Path', 1], y: list[int], z: 'int | None') -> dict: ...",
    _ns,
)


@functools.wraps(_plain)
def _wrapper(*args, **kwargs):
    return _plain(*args, **kwargs)


def _unchecked(a: int) -> int: ...


_unchecked.__no_type_check__ = True


@pytest.mark.parametrize(
    "func",
    [_plain, _mixed, _ns["_strings"], _ns["_nested"], _wrapper, _unchecked],
    ids=["plain", "mixed", "strings", "nested", "wrapper", "no_type_check"],
)
def test_hints_are_those_of_get_type_hints(func) -> None:
    expected = typing.get_type_hints(func, include_extras=True)
    hints = _type_hints(func)
    assert hints == expected
    assert list(hints) == list(expected)


def test_the_shortcut_keeps_the_annotation_objects() -> None:
    hints = _type_hints(_plain)
    assert hints["src"] is _plain.__annotations__["src"]
    assert hints["return"] is _plain.__annotations__["return"]


def test_an_undefined_forward_reference_still_fails() -> None:
    ns: dict = {"Annotated": Annotated}
    exec("def f(x: Annotated['Missing', 1]) -> None: ...", ns)
    with pytest.raises(NameError):
        _type_hints(ns["f"])
