"""Values side by side: the rows of `metrics/params show` and `diff`, pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class _Missing:
    """The value of a key absent on one side (distinct from a null param)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass
class Row:
    """One key of one file (metrics) or stage (params) and its value per revision."""

    path: str
    key: str
    values: list[Any]  # one per revision, MISSING where absent

    @property
    def change(self) -> float | int | None:
        """new - old when both are numbers (not bools), else None."""
        if len(self.values) != 2:
            return None
        old, new = self.values
        if not _numeric(old) or not _numeric(new):
            return None
        if isinstance(old, float) or isinstance(new, float):
            return round(new - old, 12)  # 0.6 - 0.5 is 0.1, not 0.09999999999999998
        return new - old

    @property
    def changed(self) -> bool:
        first = self.values[0]
        return any(v != first or type(v) is not type(first) for v in self.values[1:])


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def side_by_side(tables: list[dict[str, dict[str, Any]]], unchanged: bool = True) -> list[Row]:
    """Rows for every (path, key) in any of `tables` (path -> key -> value), sorted; with
    `unchanged` False, only the rows whose value differs between the tables."""
    paths = sorted({p for table in tables for p in table})
    rows = []
    for path in paths:
        keys = sorted({k for table in tables for k in table.get(path, {})})
        for key in keys:
            row = Row(path, key, [t.get(path, {}).get(key, MISSING) for t in tables])
            if unchanged or row.changed:
                rows.append(row)
    return rows
