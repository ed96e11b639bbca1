"""Tables of values for `metrics` and `params`: aligned text, Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

from pivot.results.compare import MISSING

if TYPE_CHECKING:
    from pivot.results.compare import Row

FORMATS = ("table", "json", "md", "csv")
ABSENT = "-"


def cell(value: Any, precision: int) -> str:
    """A value as a table shows it: floats rounded to `precision` decimals, absent as -."""
    if value is MISSING:
        return ABSENT
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{round(value, precision):g}" if abs(value) < 1e16 else f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def grid(
    first: str, revs: list[str], rows: list[Row], diff: bool, precision: int
) -> tuple[list[str], list[list[str]]]:
    """The header and cells of a table: first column (Path or Stage), Key, one column per
    revision and, for a diff, Change."""
    header = [first, "Key", *(revs if diff else ["Value"])] + (["Change"] if diff else [])
    body = []
    for row in rows:
        cells = [row.path, row.key, *(cell(v, precision) for v in row.values)]
        if diff:
            change = row.change
            if change is None:
                cells.append(_change_word(row))
            else:
                cells.append(("+" if change > 0 else "") + cell(change, precision))
        body.append(cells)
    return header, body


def render(
    fmt: str, first: str, revs: list[str], rows: list[Row], diff: bool, precision: int
) -> str:
    """The whole output in `fmt` (table, md, csv or json)."""
    if fmt == "json":
        return _json(rows, diff)
    header, body = grid(first, revs, rows, diff, precision)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return out.getvalue().rstrip("\n")
    if fmt == "md":
        lines = [_md_row(header), _md_row(["---"] * len(header))]
        return "\n".join(lines + [_md_row(r) for r in body])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *body]
    )


def _change_word(row: Row) -> str:
    """The Change cell of a row without a numeric difference."""
    old, new = row.values
    if not row.changed:
        return ABSENT
    if old is MISSING:
        return "added"
    if new is MISSING:
        return "removed"
    return "changed"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _json(rows: list[Row], diff: bool) -> str:
    """Nested by path (or stage) then key: {"value": v} for show, {"old", "new", "change"}
    for diff; an absent value is null."""
    data: dict[str, dict[str, Any]] = {}
    for row in rows:
        values = [None if v is MISSING else v for v in row.values]
        if diff:
            entry = {"old": values[0], "new": values[1], "change": row.change}
        else:
            entry = {"value": values[0]}
        data.setdefault(row.path, {})[row.key] = entry
    return json.dumps(data, indent=2, sort_keys=True)
