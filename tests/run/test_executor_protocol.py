"""Every executor in `pivot/run/` matches the `Executor` protocol the scheduler drives:
same methods, same parameters, same annotations (the local one also `StoppingExecutor`),
so a change to the protocol or to one executor cannot drift unnoticed."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib

import pytest

import pivot.run
from pivot.run.executor import Executor, StoppingExecutor

RUN = pathlib.Path(pivot.run.__file__).parent
PROTOCOLS = {"Executor", "StoppingExecutor"}


def _executor_classes() -> list[tuple[str, str]]:
    """(module, class) of every class named `...Executor` defined in `pivot/run/`."""
    found = []
    for path in sorted(RUN.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.ClassDef)
                and node.name.endswith("Executor")
                and node.name not in PROTOCOLS
            ):
                found.append((f"pivot.run.{path.stem}", node.name))
    return found


def _members(protocol: type) -> list[str]:
    return sorted(
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )


def _signature(func) -> list[tuple[str, object, object]]:
    """Parameters (name, kind, annotation text) and the return annotation text."""
    sig = inspect.signature(func)
    params = [(p.name, p.kind, p.annotation) for p in sig.parameters.values()]
    return [*params, ("return", None, sig.return_annotation)]


def test_the_executors_are_found():
    assert {"LocalExecutor", "DaskExecutor"} <= {name for _, name in _executor_classes()}


@pytest.mark.parametrize(("module", "name"), _executor_classes())
def test_an_executor_matches_the_protocol(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, Executor), f"{name} lacks some of {_members(Executor)}"
    protocols = [Executor]
    if name == "LocalExecutor":  # `Runner.cancel` (watch mode) stops its stages
        assert issubclass(cls, StoppingExecutor), f"{name} has no cancel"
        protocols.append(StoppingExecutor)
    for protocol in protocols:
        for member in _members(protocol):
            want = _signature(getattr(protocol, member))
            assert _signature(getattr(cls, member)) == want, f"{name}.{member} differs"
