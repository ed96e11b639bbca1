"""The plots page: one self-contained HTML file with a Vega-Lite chart per plot (one
series per revision) and images inline; the Vega JavaScript is bundled into the page by
vl-convert, so opening it needs no network."""

from __future__ import annotations

import base64
import html
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

from pivot import _fs
from pivot.errors import MissingPackage

STEP = "step"  # the x of a plot that names none: the row number
REV = "rev"  # the field naming the revision of a point


@dataclass
class Series:
    """The data of one plot in one revision: rows, or an image's bytes."""

    rev: str
    rows: list[dict[str, Any]] | None = None
    image: bytes | None = None
    mime: str = ""


@dataclass
class Chart:
    """One plot of the page: how to draw it, its series and what could not be shown."""

    path: str
    settings: dict[str, Any]
    series: list[Series] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def vega_lite(chart: Chart, revs: list[str]) -> dict[str, Any] | None:
    """The Vega-Lite spec of a data chart, or None when no series can be drawn (each
    reason added to `chart.notes`)."""
    settings = chart.settings
    x, y, template = settings.get("x"), settings.get("y"), settings.get("template", "line")
    values: list[dict[str, Any]] = []
    for series in chart.series:
        rows = series.rows or []
        columns = list(dict.fromkeys(k for row in rows[:1000] for k in row))
        sx = x or STEP
        sy = y or next((c for c in reversed(columns) if c != sx), None)
        lacking = [c for c in (x, sy) if c is not None and c not in columns]
        if sy is None or lacking or not rows:
            what = "has no rows" if not rows else f"has no column {(lacking or [y])[0]!r}"
            chart.notes.append(
                f"{chart.path} in {series.rev} {what} (columns: {', '.join(columns) or 'none'})."
            )
            continue
        y = y or sy
        xs = [row.get(sx) for row in rows] if x else list(range(len(rows)))
        values.append({"x": xs, "y": [row.get(sy) for row in rows], REV: series.rev})
    if not values:
        return None
    xname, yname = x or STEP, y or "value"
    spec: dict[str, Any] = {  # the title is the section's heading
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": 560,
        "height": 300,
        "data": {"values": values},  # one object of columns per revision:
        "transform": [{"flatten": ["x", "y"]}],  # made points in the page
    }
    color = {"field": REV, "type": "nominal", "title": "revision", "sort": revs}
    if template == "confusion":
        spec.update(
            {
                "transform": [
                    *spec["transform"],
                    {"aggregate": [{"op": "count", "as": "count"}], "groupby": ["x", "y", REV]},
                ],
                "mark": "rect",
                "encoding": {
                    "x": {"field": "x", "type": "nominal", "title": xname},
                    "y": {"field": "y", "type": "nominal", "title": yname},
                    "color": {"field": "count", "type": "quantitative"},
                },
                "width": 300 if len(revs) == 1 else 180,
                "height": 300 if len(revs) == 1 else 180,
            }
        )  # fmt: skip
        if len(revs) > 1:
            spec["encoding"]["column"] = {**color, "header": {"title": None}}
        return spec
    numeric_x = all(isinstance(v, int | float) for series in values for v in series["x"])
    xtype = "quantitative" if numeric_x and template != "bar" else "ordinal"
    encoding: dict[str, Any] = {
        "x": {"field": "x", "type": xtype, "title": xname},
        "y": {"field": "y", "type": "quantitative", "title": yname},
    }
    if len(revs) > 1:
        encoding["color"] = color
        if template == "bar":
            encoding["xOffset"] = {"field": REV}
    spec["mark"] = {"line": "line", "scatter": "point", "bar": "bar"}[template]
    if template == "line":
        spec["mark"] = {"type": "line", "tooltip": True}
    spec["encoding"] = encoding
    return spec


def render_page(
    title: str, charts: list[Chart], revs: list[str], notes: list[str], bundle: str
) -> str:
    """The HTML page: charts drawn as SVG by the inlined Vega bundle once loaded."""
    specs: list[dict[str, Any]] = []
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    if notes:
        body.append(_notes(notes))
    for chart in charts:
        images = [s for s in chart.series if s.image is not None]
        body.append('<section class="plot">')
        body.append(f"<h2>{html.escape(chart.settings.get('title') or chart.path)}</h2>")
        if images:
            for series in images:
                data = base64.b64encode(series.image or b"").decode()
                body.append(
                    f'<figure><img alt="{html.escape(chart.path)} in {html.escape(series.rev)}"'
                    f' src="data:{series.mime};base64,{data}">'
                    f"<figcaption>{html.escape(series.rev)}</figcaption></figure>"
                )
        else:
            spec = vega_lite(chart, revs)
            if spec is not None:
                body.append(f'<div class="chart" id="chart-{len(specs)}"></div>')
                specs.append(spec)
        if chart.notes:
            body.append(_notes(chart.notes))
        body.append("</section>")
    data = json.dumps(specs, default=str).replace("<", "\\u003c")
    return PAGE.format(
        title=html.escape(title),
        body="\n".join(body),
        bundle=bundle.replace("</script", "<\\/script"),
        specs=data,
    )


def _notes(notes: list[str]) -> str:
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f'<ul class="notes">{items}</ul>'


def vega_bundle(cache_dir: pathlib.Path) -> str:
    """The Vega, Vega-Lite and vega-embed JavaScript as one script, bundled by
    vl-convert once per vl-convert version and kept in `cache_dir`."""
    try:
        import vl_convert
    except ImportError:
        raise MissingPackage(
            "Drawing plots needs vl-convert-python, which is not installed. Install it with "
            "`pip install vl-convert-python` (or `pip install pivot[plots]`).",
            package="vl-convert-python",
        ) from None
    version = getattr(vl_convert, "__version__", "unknown")
    cached = cache_dir / f"vega-bundle-{version}.js"
    try:
        return cached.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    bundle = vl_convert.javascript_bundle()
    _fs.write_text(cached, bundle)
    return bundle


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
section.plot {{ margin-bottom: 2.5em; }}
ul.notes {{ background: #fff4e5; border-left: 4px solid #f0a030; padding: .6em 2em; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ max-width: 560px; border: 1px solid #ddd; }}
</style>
<script>{bundle}</script>
</head>
<body>
{body}
<script>
const specs = {specs};
specs.forEach((spec, i) => {{
  const el = document.getElementById("chart-" + i);
  vegaEmbed(el, spec, {{renderer: "svg", actions: false}})
    .then(() => {{ el.dataset.rendered = "true"; }})
    .catch((err) => {{ el.textContent = "This chart could not be drawn: " + err; }});
}});
</script>
</body>
</html>
"""
