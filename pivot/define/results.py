"""`pivot.Metric` and `pivot.Plot`: outputs that `pivot metrics` and `pivot plots` show.

Both are `pivot.Out`s (cached, restored and pushed the same way) with a loader chosen by
the file's extension unless one is given: the stage may return the values (a dict for a
metric; rows, columns or a DataFrame for a plot) or write the file itself and return its
path or None.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from pivot.define.loaders import Loader
from pivot.define.metric_values import FORMATS, csv_text, metric_format
from pivot.define.stage import Out
from pivot.errors import DefinitionError

TEMPLATES = ("line", "scatter", "bar", "confusion")
DATA_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl"}
IMAGE_FORMATS = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
                 ".jpeg": "image/jpeg", ".gif": "image/gif"}  # fmt: skip


def _wrote_itself(value: Any) -> bool:
    return value is None or isinstance(value, str | os.PathLike)


@dataclass(frozen=True)
class MetricFile(Loader):
    """Loads a metrics file as a dict; saves a returned dict in the file's format (a
    returned path or None means the stage wrote the file itself)."""

    format: str = "json"

    def load(self, path: pathlib.Path) -> Any:
        from pivot.define.metric_values import read_metrics_file

        if self.format == "json":
            return json.loads(path.read_text(encoding="utf-8"))
        if self.format == "yaml":
            import yaml

            return yaml.safe_load(path.read_text(encoding="utf-8"))
        return read_metrics_file(path, str(path))

    def save(self, value: Any, path: pathlib.Path) -> None:
        if _wrote_itself(value):
            return
        if self.format == "json":
            text = json.dumps(value, indent=2, sort_keys=True) + "\n"
        elif self.format == "yaml":
            import yaml

            text = yaml.safe_dump(value, sort_keys=True)
        else:
            if not isinstance(value, dict):
                raise TypeError(f"a CSV metrics file is written from a dict, not {value!r}")
            text = csv_text(value)
        path.write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class PlotFile(Loader):
    """Saves plot data returned by a stage: rows (a list of dicts), columns (a dict of
    lists) or a pandas DataFrame as CSV / JSON / JSONL, bytes as an image; a returned path
    or None means the stage wrote the file itself."""

    format: str = "csv"

    def load(self, path: pathlib.Path) -> Any:
        if self.format == "image":
            return path.read_bytes()
        from pivot.define.plot_data import parse_rows

        return parse_rows(path.read_bytes(), self.format, str(path))

    def save(self, value: Any, path: pathlib.Path) -> None:
        if _wrote_itself(value):
            return
        if self.format == "image":
            path.write_bytes(value)
            return
        rows = _rows(value)
        if self.format == "csv":
            import csv

            columns = list(dict.fromkeys(k for row in rows for k in row))
            with open(path, "w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        elif self.format == "json":
            path.write_text(json.dumps(rows, default=str) + "\n", encoding="utf-8")
        else:
            text = "".join(json.dumps(row, default=str) + "\n" for row in rows)
            path.write_text(text, encoding="utf-8")


def _rows(value: Any) -> list[dict[str, Any]]:
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return value.to_dict(orient="records")
    if isinstance(value, dict):
        columns = {k: list(v) for k, v in value.items()}
        length = max((len(v) for v in columns.values()), default=0)
        return [{k: v[i] for k, v in columns.items() if i < len(v)} for i in range(length)]
    rows = list(value)
    if not all(isinstance(row, dict) for row in rows):
        raise TypeError("plot data must be rows (dicts), a dict of columns or a DataFrame")
    return rows


@dataclass(frozen=True)
class Metric(Out):
    """A small JSON / YAML / CSV file of metrics: `Annotated[dict, pivot.Metric(path)]`.

    Its flattened values are also written into the stage's lock file, so `pivot metrics
    diff` compares commits from git alone.
    """

    loader: Loader = None  # type: ignore[assignment]  # chosen by extension when None

    def __post_init__(self) -> None:
        fmt = metric_format(self.path)
        if fmt is None:
            raise DefinitionError(
                f"pivot.Metric({self.path!r}): a metrics file must end in "
                f"{', '.join(FORMATS)} so that Pivot can read its values."
            )
        if self.loader is None:
            object.__setattr__(self, "loader", MetricFile(fmt))


@dataclass(frozen=True)
class Plot(Out):
    """A series to chart (CSV / JSON / JSONL rows) or an image (PNG, SVG, JPEG, GIF):
    `Annotated[list[dict], pivot.Plot(path, x="step", y="loss", template="line")]`.

    `x` defaults to the row number (`step`), `y` to the last column; `template` is one of
    line, scatter, bar or confusion (x: actual class, y: predicted class).
    """

    loader: Loader = None  # type: ignore[assignment]
    x: str | None = None
    y: str | None = None
    template: str = "line"
    title: str | None = None

    def __post_init__(self) -> None:
        suffix = pathlib.PurePosixPath(self.path).suffix.lower()
        if suffix not in DATA_FORMATS and suffix not in IMAGE_FORMATS:
            raise DefinitionError(
                f"pivot.Plot({self.path!r}): a plot is a data file ({', '.join(DATA_FORMATS)}) "
                f"or an image ({', '.join(IMAGE_FORMATS)})."
            )
        if self.template not in TEMPLATES:
            raise DefinitionError(
                f"pivot.Plot({self.path!r}): unknown template {self.template!r}; use one of "
                f"{', '.join(TEMPLATES)}."
            )
        if self.template == "confusion" and (self.x is None or self.y is None):
            raise DefinitionError(
                f"pivot.Plot({self.path!r}): the confusion template needs x (the actual "
                f"class column) and y (the predicted class column)."
            )
        if self.loader is None:
            fmt = DATA_FORMATS.get(suffix, "image")
            object.__setattr__(self, "loader", PlotFile(fmt))

    @property
    def is_image(self) -> bool:
        return pathlib.PurePosixPath(self.path).suffix.lower() in IMAGE_FORMATS

    def settings(self) -> dict[str, Any]:
        """How to draw it, as plain data."""
        fields = ("x", "y", "template", "title")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in fields}
