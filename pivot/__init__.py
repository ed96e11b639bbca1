"""Pivot: typed Python pipelines on a content-addressed cache with a remote store.

The public face: `Pipeline`, `Dep`, `Out` and the `loaders` module.
"""

from pivot import loaders
from pivot.pipeline import Pipeline
from pivot.stage import Dep, Out

__all__ = ["Dep", "Out", "Pipeline", "loaders"]
