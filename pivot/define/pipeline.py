"""`pivot.Pipeline`: a named set of stages defined in one pipeline.py or pivot.yaml."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pivot.define.stage import Dep, Out, default_params, params_as_dict, read_signature
from pivot.errors import DefinitionError


class Registration(NamedTuple):
    """A stage as registered, before its paths are resolved against the project."""

    name: str
    func: Any
    deps: dict[str, Dep]
    outs: dict[str, Out]
    single_out: bool
    params: Any
    resources: dict[str, float | str]
    outs_as_args: bool = False  # a plain function: outs passed as paths, written by it


@dataclass
class Pipeline:
    """A pipeline of stages; its directory is the working directory of its stages."""

    name: str
    directory: pathlib.Path | None = None
    registrations: dict[str, Registration] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "pipeline name")
        if self.directory is None:
            caller = sys._getframe(2).f_globals.get("__file__")
            self.directory = pathlib.Path(caller).resolve().parent if caller else None

    def register(
        self,
        func: Any,
        name: str | None = None,
        params: Any = None,
        deps: dict[str, str] | None = None,
        outs: dict[str, str] | None = None,
        resources: dict[str, float | str] | None = None,
    ) -> Any:
        """Add `func` as a stage; `deps`/`outs` override annotated paths by argument/key.

        `resources` (`{"GPU": 1, "memory": "8GB"}`) is what a worker of a cluster executor
        must offer to run the stage; it is not part of the stage's cache key."""
        stage_name = name or func.__name__
        check_name(stage_name, f"stage name in pipeline {self.name!r}")
        where = f"stage {self.name}/{stage_name} (function {func.__qualname__})"
        if stage_name in self.registrations:
            raise DefinitionError(
                f"The pipeline {self.name!r} registers two stages named {stage_name!r}."
            )
        dep_marks, out_marks, single, params_type = read_signature(func, where)
        dep_marks = _override(dep_marks, deps or {}, Dep, "deps", where)
        out_marks = _override(out_marks, outs or {}, Out, "outs", where)
        params = default_params(params, params_type, where)
        try:
            params_as_dict(params)
        except TypeError as exc:
            raise DefinitionError(f"{where}: {exc}.") from None
        self.registrations[stage_name] = Registration(
            stage_name,
            func,
            dep_marks,
            out_marks,
            single,
            params,
            resources=checked_resources(resources, where),
        )
        return func


def checked_resources(resources: Any, where: str) -> dict[str, float | str]:
    """`resources` checked: names mapped to positive numbers or sizes such as "8GB"."""
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise DefinitionError(
            f"{where}: resources must be a mapping such as {{'GPU': 1, 'memory': '8GB'}}, "
            f"not {type(resources).__name__}."
        )
    checked: dict[str, float | str] = {}
    for name, amount in resources.items():
        number = isinstance(amount, int | float) and not isinstance(amount, bool)
        if not isinstance(name, str) or not name:
            raise DefinitionError(
                f"{where}: resource names must be non-empty strings, not {name!r}."
            )
        if not (number and amount > 0) and not (isinstance(amount, str) and amount.strip()):
            raise DefinitionError(
                f"{where}: resource {name!r} must be a positive number or a size such as "
                f"'8GB', not {amount!r}."
            )
        checked[name] = amount
    return checked


def _override(marks: dict, paths: dict[str, str], kind: type, what: str, where: str) -> dict:
    if not paths:
        return marks
    unknown = sorted(set(paths) - set(marks))
    if unknown:
        noun = "parameter" if kind is Dep else "output"
        known = ", ".join(sorted(marks)) or "none"
        raise DefinitionError(
            f"{where}: {what} override(s) {', '.join(unknown)} match no annotated "
            f"{noun}; known: {known}."
        )
    return {k: dataclasses.replace(m, path=paths[k]) if k in paths else m for k, m in marks.items()}


NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: object, what: str) -> None:
    """Pipeline and stage names become lock file paths: plain names only."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DefinitionError(
            f"Invalid {what} {name!r}: use letters, digits, '_', '-' and '.', starting with a "
            f"letter, digit or '_' (it names the lock file .pivot/stages/<pipeline>/<stage>.lock)."
        )
