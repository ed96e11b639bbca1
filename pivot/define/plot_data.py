"""Plot data: the rows of a CSV, JSON or JSONL series file, numbers parsed."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pivot.errors import CorruptFile


def parse_rows(data: bytes, fmt: str, path: str) -> list[dict[str, Any]]:
    """The rows of the plot file `path` holding `data` (`fmt`: csv, json or jsonl);
    CorruptFile naming the file if they cannot be read."""
    try:
        text = data.decode("utf-8")
        if fmt == "csv":
            rows: Any = _csv_rows(text)
        elif fmt == "jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
            if isinstance(rows, dict):  # {"loss": [...]} or {"series": [rows]}
                rows = _from_mapping(rows)
    except (ValueError, RecursionError, csv.Error) as exc:
        raise CorruptFile(
            f"The plot file {path} is not valid {fmt.upper()} ({exc}).", path=path
        ) from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise CorruptFile(
            f"The plot file {path} does not hold rows: write a list of objects (one per "
            f"point), an object of equally long lists, or a CSV with a header row.",
            path=path,
        )
    return rows


def _from_mapping(raw: dict[str, Any]) -> Any:
    values = list(raw.values())
    if len(values) == 1 and isinstance(values[0], list):
        inner = values[0]
        if all(isinstance(row, dict) for row in inner):
            return inner
    if values and all(isinstance(v, list) for v in values):
        length = max(len(v) for v in values)
        return [{k: v[i] for k, v in raw.items() if i < len(v)} for i in range(length)]
    return raw


def _csv_rows(text: str) -> list[dict[str, Any]]:
    """The rows of a CSV with a header row, each column's numbers parsed (column by
    column: a plot's columns are numbers, mostly)."""
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        return []
    header, body = lines[0], lines[1:]
    if any(len(line) != len(header) for line in body):
        bad = next(i for i, line in enumerate(body, 2) if len(line) != len(header))
        raise ValueError(f"line {bad} has {len(body[bad - 2])} fields, the header {len(header)}")
    columns = [_column(list(col)) for col in zip(*body, strict=True)] if body else []
    return [dict(zip(header, values, strict=True)) for values in zip(*columns, strict=True)]


def _column(texts: list[str]) -> list[Any]:
    if all(t.lstrip("-").isdigit() and t.isascii() for t in texts):
        return [int(t) for t in texts]
    try:
        return [float(t) for t in texts]
    except ValueError:
        return [_number(t) for t in texts]


def _number(text: str | None) -> Any:
    if text is None:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
