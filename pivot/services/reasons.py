"""Reasons a stage is not up to date, as shown to the user: a changed param with its old
and new values (`param changed: alpha 0.1 → 100`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pivot.run.plan import lock_params

if TYPE_CHECKING:
    from pivot.run.plan import Decision

PARAM_CHANGED = "param changed: "
WIDTH = 40
_ABSENT = object()


def describe_reasons(decision: Decision) -> list[str]:
    """The decision's reasons, each changed param followed by its old → new values."""
    if decision.lock is None or not any(r.startswith(PARAM_CHANGED) for r in decision.reasons):
        return list(decision.reasons)
    new = lock_params(decision.stage)
    old = decision.lock.params
    return [
        param_change(name, old.get(name, _ABSENT), new.get(name, _ABSENT))
        if (name := r.removeprefix(PARAM_CHANGED)) != r
        else r
        for r in decision.reasons
    ]


def param_change(name: str, old: Any, new: Any) -> str:
    """`param changed: NAME OLD → NEW`, each value as compact JSON (cut to a short width)."""
    return f"{PARAM_CHANGED}{name} {_shown(old)} → {_shown(new)}"


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "(unset)"
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"
