"""The metric values a lock file records: read from the cached metrics files."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pivot.cache.hashing import FILE
from pivot.define.metric_values import MAX_FILE_BYTES, parse_metrics
from pivot.define.stage import Out
from pivot.errors import PivotError

if TYPE_CHECKING:
    from pivot.cache.objects import LocalCache
    from pivot.define.stage import StageSpec
    from pivot.run.lockfile import Lock

log = logging.getLogger(__name__)  # the CLI shows warnings; see pivot.cli.main


def _is_metric(mark: object) -> bool:
    """Whether an output's mark is a `pivot.Metric`. A plain `Out` (most outputs) is settled
    without importing `pivot.define.results`, which a no-op run then never loads."""
    if mark is None or type(mark) is Out:
        return False
    from pivot.define.results import Metric

    return isinstance(mark, Metric)


def reads_cache(stage: StageSpec) -> bool:
    """Whether `lock_metrics` may read `stage`'s outputs from the cache (it has metrics)."""
    return any(_is_metric(art.mark) for art in stage.outs)


def lock_metrics(
    stage: StageSpec, outs: dict[str, dict[str, Any]], old: Lock | None, cache: LocalCache
) -> dict[str, dict[str, Any]]:
    """The flat values of each `pivot.Metric` output of `stage` among `outs`: kept from
    the old lock when the file is the same, else read from the cache; a file the cache
    lacks (a restore that was only recorded) is left out until it is checked out."""
    metrics: dict[str, dict[str, Any]] = {}
    for art in stage.outs:
        out = outs.get(art.path)
        if out is None or out["kind"] != FILE or not _is_metric(art.mark):
            continue
        same = old is not None and old.outs.get(art.path, {}).get("hash") == out["hash"]
        if same and art.path in old.metrics:
            metrics[art.path] = old.metrics[art.path]
            continue
        if out["size"] > MAX_FILE_BYTES:
            continue  # the run refused it; a restored one is not recorded
        try:
            metrics[art.path] = parse_metrics(cache.read_bytes(out["hash"]), art.path)
        except FileNotFoundError:
            continue
        except PivotError as exc:
            log.warning(f"Stage {stage.id}: {exc} Its values are not recorded in the lock file.")
    return metrics
