"""Metric values: a metrics file (JSON, YAML or CSV) read into flat keys -> scalars.

Nested mappings become dotted keys (`train.loss`), list items their index (`scores.0`).
A value is a number, a bool or a short string; anything else (null, an empty list) is
refused with the file and key named. The same bounds apply to values read back from a
lock file, which is untrusted.
"""

from __future__ import annotations

import io
import json
import math
import pathlib
from typing import Any

from pivot.errors import CorruptFile

MAX_FILE_BYTES = 1 << 20  # a metrics file is small; a bigger one is likely a data file
MAX_KEYS = 1000
MAX_KEY_CHARS = 250
MAX_TEXT_CHARS = 250

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".csv": "csv"}

Scalar = int | float | bool | str


def metric_format(path: str) -> str | None:
    """The format of a metrics file by its extension, or None if it is not one."""
    return FORMATS.get(pathlib.PurePosixPath(path).suffix.lower())


def parse_metrics(data: bytes, path: str) -> dict[str, Scalar]:
    """The flat values of the metrics file `path` holding `data`; CorruptFile if it is not
    a small JSON / YAML / CSV file of numbers and strings."""
    fmt = metric_format(path)
    if fmt is None:
        raise CorruptFile(
            f"The metrics file {path} is not .json, .yaml, .yml or .csv: Pivot cannot read "
            f"its values. Write the metrics in one of those formats.",
            path=path,
        )
    if len(data) > MAX_FILE_BYTES:
        raise CorruptFile(
            f"The metrics file {path} is {len(data):,} bytes, over the {MAX_FILE_BYTES:,}-byte "
            f"limit for metrics (they are copied into the lock file). Keep a few summary "
            f"numbers in it and declare bulky results as pivot.Out or pivot.Plot.",
            path=path,
        )
    try:
        text = data.decode("utf-8")
        if fmt == "json":
            raw: Any = json.loads(text)
        elif fmt == "yaml":
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = _csv_values(text)
    except Exception as exc:  # JSON, YAML (no importable base class) and CSV errors
        raise CorruptFile(
            f"The metrics file {path} is not valid {fmt.upper()} ({_first_line(exc)}). Fix "
            f"the stage that writes it.",
            path=path,
        ) from None
    if not isinstance(raw, dict | list):
        raise CorruptFile(
            f"The metrics file {path} holds a single {type(raw).__name__}, not a mapping of "
            f'names to values. Write it as e.g. {{"accuracy": 0.93}}.',
            path=path,
        )
    flat: dict[str, Scalar] = {}
    _flatten(raw, "", flat, path)
    return flat


def flatten_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as dotted keys to their JSON values (lists kept whole, as DVC shows them)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = value

    for key, value in params.items():
        walk(value, str(key))
    return flat


def check_values(values: object, what: str) -> dict[str, Scalar]:
    """`values` read back from an untrusted file (a lock file), if it is a bounded mapping
    of short string keys to scalars; ValueError otherwise."""
    if not isinstance(values, dict):
        raise ValueError(f"the metrics of {what} are not a mapping")
    if len(values) > MAX_KEYS:
        raise ValueError(f"the metrics of {what} have more than {MAX_KEYS} keys")
    for key, value in values.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
            raise ValueError(f"the metrics of {what} hold an invalid key {str(key)[:40]!r}")
        if not _is_scalar(value):
            raise ValueError(f"the metric {key!r} of {what} is not a number or a short string")
    return values


def _is_scalar(value: object) -> bool:
    if isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_TEXT_CHARS


def _flatten(value: Any, prefix: str, flat: dict[str, Scalar], path: str) -> None:
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        empty = True
        for key, inner in items:
            empty = False
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), flat, path)
        if empty and prefix:
            _refuse(path, prefix, value)
        return
    if not _is_scalar(value):
        _refuse(path, prefix, value)
    if not prefix:
        raise CorruptFile(
            f"The metrics file {path} holds the value {value!r} under an empty name. Give "
            f"every metric a name.",
            path=path,
        )
    if len(prefix) > MAX_KEY_CHARS:
        raise CorruptFile(
            f"The metrics file {path} has a key longer than {MAX_KEY_CHARS} characters "
            f"({prefix[:40]}...). Use shorter names.",
            path=path,
        )
    if len(flat) >= MAX_KEYS:
        raise CorruptFile(
            f"The metrics file {path} has more than {MAX_KEYS} values, the limit for metrics "
            f"(they are copied into the lock file). Keep a few summary numbers in it and "
            f"declare bulky results as pivot.Out or pivot.Plot.",
            path=path,
        )
    flat[prefix] = value


def _refuse(path: str, key: str, value: Any) -> None:
    shown = json.dumps(value, default=repr)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise CorruptFile(
        f"The metrics file {path} holds {shown} at {key!r}, which is not a metric: use a "
        f"finite number, true/false or a string of at most {MAX_TEXT_CHARS} characters.",
        path=path,
    )


def _csv_values(text: str) -> dict[str, Any]:
    """A CSV of one header row: one data row gives column -> value, several give
    `row.column` -> value."""
    import csv  # here: a run that reads no CSV metrics does not load it

    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) > MAX_KEYS:
        raise ValueError(f"more than {MAX_KEYS} rows")
    for row in rows:
        if None in row:
            raise ValueError("a row has more fields than the header")
    parsed = [{k: _csv_scalar(v) for k, v in row.items()} for row in rows]
    if len(parsed) == 1:
        return parsed[0]
    return {str(i): row for i, row in enumerate(parsed)}


def _csv_scalar(text: str | None) -> Scalar:
    if text is None:
        raise ValueError("a row has fewer fields than the header")
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if not isinstance(value, float) or math.isfinite(value):
            return value
    return text


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def read_metrics_file(file: pathlib.Path, path: str) -> dict[str, Scalar]:
    """The values of the metrics file at `file` (named `path` in errors), read bounded."""
    with open(file, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    return parse_metrics(data, path)


def csv_text(values: dict[str, Any]) -> str:
    """A flat mapping as a metrics CSV: a header row and one row of values."""
    import csv

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(values))
    writer.writerow(list(values.values()))
    return out.getvalue()
