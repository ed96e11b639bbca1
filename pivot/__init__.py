"""Pivot: typed Python pipelines on a content-addressed cache with a remote store.

The public face: `Pipeline`, `Dep`, `Out`, `Metric`, `Plot` and the `loaders` module
(loaded on first use, so that `pivot --help` stays fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pivot.define import loaders
    from pivot.define.pipeline import Pipeline
    from pivot.define.results import Metric, Plot
    from pivot.define.stage import Dep, Out

__all__ = ["Dep", "Metric", "Out", "Pipeline", "Plot", "loaders"]

_EXPORTS = {
    "Pipeline": ("pivot.define.pipeline", "Pipeline"),
    "Dep": ("pivot.define.stage", "Dep"),
    "Out": ("pivot.define.stage", "Out"),
    "Metric": ("pivot.define.results", "Metric"),
    "Plot": ("pivot.define.results", "Plot"),
    "loaders": ("pivot.define.loaders", None),
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pivot' has no attribute {name!r}")
    module_name, attr = _EXPORTS[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
