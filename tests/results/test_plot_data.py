"""Plot files read into rows, and the Vega-Lite spec of each template."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pivot.define.plot_data import parse_rows
from pivot.errors import PivotError
from pivot.results.plots_page import Chart, Series, render_page, vega_lite


def test_rows_from_csv_json_and_jsonl() -> None:
    assert parse_rows(b"step,loss\n0,0.5\n1,x\n", "csv", "p.csv") == [
        {"step": 0, "loss": 0.5},
        {"step": 1, "loss": "x"},
    ]
    assert parse_rows(b'{"loss": [1, 2]}', "json", "p.json") == [{"loss": 1}, {"loss": 2}]
    assert parse_rows(b'{"train": [{"a": 1}]}', "json", "p.json") == [{"a": 1}]
    assert parse_rows(b'{"a": 1}\n\n{"a": 2}\n', "jsonl", "p.jsonl") == [{"a": 1}, {"a": 2}]
    with pytest.raises(PivotError, match=r"p\.json does not hold rows"):
        parse_rows(b"[1, 2]", "json", "p.json")


def _chart(template: str, rows: list[dict], x=None, y=None, revs=("a",)) -> Chart:
    settings = {"x": x, "y": y, "template": template, "title": None}
    return Chart("p.csv", settings, [Series(rev, rows=rows) for rev in revs])


def test_specs_per_template_and_defaults() -> None:
    rows = [{"epoch": 1, "loss": 0.5, "acc": 0.7}, {"epoch": 2, "loss": 0.4, "acc": 0.8}]
    line = vega_lite(_chart("line", rows), ["a"])
    assert line["mark"]["type"] == "line"
    assert line["encoding"]["x"]["title"] == "step"  # no x: the row number
    assert line["encoding"]["y"]["title"] == "acc"  # no y: the last column
    assert line["data"]["values"] == [{"x": [0, 1], "y": [0.7, 0.8], "rev": "a"}]
    two = vega_lite(_chart("bar", rows, x="epoch", y="loss", revs=("a", "b")), ["a", "b"])
    assert two["mark"] == "bar" and two["encoding"]["color"]["sort"] == ["a", "b"]
    assert [v["y"] for v in two["data"]["values"]] == [[0.5, 0.4], [0.5, 0.4]]
    confusion = vega_lite(_chart("confusion", rows, x="epoch", y="acc"), ["a"])
    assert confusion["mark"] == "rect"


def test_missing_columns_become_notes() -> None:
    chart = _chart("line", [{"a": 1}], x="epoch", y="loss")
    assert vega_lite(chart, ["a"]) is None
    assert chart.notes == ["p.csv in a has no column 'epoch' (columns: a)."]


def test_the_page_cannot_be_broken_out_of_by_data() -> None:
    rows = [{"x": "</script><script>alert(1)</script>", "y": 1}]
    chart = Chart("<b>p.csv</b>", {"x": "x", "y": "y", "template": "bar"}, [Series("r", rows)])
    page = render_page("t", [chart], ["r"], ["<i>note</i>"], "/* bundle */")
    assert "</script><script>alert" not in page and "<b>p.csv" not in page
    assert "&lt;i&gt;note&lt;/i&gt;" in page


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300)
    | st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=15,
    ).map(lambda v: json.dumps(v).encode())
)
def test_fuzz_plot_files_read_or_refuse_cleanly(data: bytes) -> None:
    for fmt in ("csv", "json", "jsonl"):
        try:
            rows = parse_rows(data, fmt, f"p.{fmt}")
        except PivotError:
            continue
        assert all(isinstance(row, dict) for row in rows)
        vega_lite(Chart("p", {"template": "line"}, [Series("r", rows=rows)]), ["r"])
