"""The text of a run's output (a stage's line, the summary line, the JSON document), made
without click, so that a replayed no-op (`cli.entry`) prints it before click loads."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# Counts of the summary line and the JSON document, by the status they count.
COUNTED = ("ran", "restored", "skipped", "failed", "blocked")


def stage_text(label: str, stage_id: str, timing: str, note: str) -> str:
    """A stage's line (with `label` already styled, if at all), trailing spaces removed."""
    return f"  {label} {stage_id:<40} {timing}{note}".rstrip()


def summary_text(total: int, settled: int, counts: dict[str, int], seconds: float) -> str:
    """The line that ends a run: how many of the `total` stages ran, were restored, were
    up to date... (`counts` by status, of the `settled` ones), and the whole command's
    time."""
    ran, restored, skipped, failed, blocked = (counts.get(s, 0) for s in COUNTED)
    not_run = total - settled
    stages = f"{total} stage{'s' * (total != 1)}"
    if ran == restored == failed == blocked == not_run == 0:
        return f"Every stage is up to date ({stages}, {seconds:.2f}s)."
    parts = [f"{ran} ran", f"{restored} restored", f"{skipped} up to date"]
    parts += [
        f"{n} {what}"
        for n, what in (
            (failed, "failed"),
            (blocked, "blocked by a failure"),
            (not_run, "not started"),
        )
        if n
    ]
    return f"{stages}: {', '.join(parts)} in {seconds:.2f}s."


def run_document(
    stages: Iterable[tuple[str, str, float, str]], total: int, seconds: float
) -> dict[str, Any]:
    """`run --json`: every settled stage (id, status, seconds, detail), the counts of the
    summary line, the time."""
    rows = [
        {"stage": sid, "status": status, "seconds": round(took, 3), "detail": detail}
        for sid, status, took, detail in stages
    ]
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in COUNTED}
    return {
        "stages": rows,
        "total": total,
        "counts": {
            "ran": counts["ran"],
            "restored": counts["restored"],
            "up_to_date": counts["skipped"],
            "failed": counts["failed"],
            "blocked": counts["blocked"],
            "not_started": total - len(rows),
        },
        "seconds": round(seconds, 3),
    }


def json_text(data: Any, sort_keys: bool = False) -> str:
    """A JSON document as every command prints it."""
    return json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False)
