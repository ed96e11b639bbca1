"""Rows side by side and their rendering as text, Markdown, CSV and JSON."""

from __future__ import annotations

import json

from pivot.cli.tables import render
from pivot.results.compare import MISSING, side_by_side

OLD = {"m.json": {"acc": 0.5, "loss": 0.3, "name": "a", "gone": 1}}
NEW = {"m.json": {"acc": 0.75, "loss": 0.3, "name": "b", "added": True}}


def test_side_by_side_changed_only_and_all() -> None:
    rows = side_by_side([OLD, NEW], unchanged=False)
    assert [(r.key, r.values, r.change) for r in rows] == [
        ("acc", [0.5, 0.75], 0.25),
        ("added", [MISSING, True], None),
        ("gone", [1, MISSING], None),
        ("name", ["a", "b"], None),
    ]
    assert [r.key for r in side_by_side([OLD, NEW])] == ["acc", "added", "gone", "loss", "name"]
    # 1 and 1.0 or True are different values
    assert side_by_side([{"p": {"k": 1}}, {"p": {"k": True}}], unchanged=False)


def test_text_markdown_csv_and_json() -> None:
    rows = side_by_side([OLD, NEW], unchanged=False)
    text = render("table", "Path", ["HEAD", "workspace"], rows, True, 5).splitlines()
    assert text[0].split() == ["Path", "Key", "HEAD", "workspace", "Change"]
    assert text[1].split() == ["m.json", "acc", "0.5", "0.75", "+0.25"]
    assert text[2].split() == ["m.json", "added", "-", "true", "added"]
    md = render("md", "Path", ["HEAD", "workspace"], rows, True, 5).splitlines()
    assert md[0] == "| Path | Key | HEAD | workspace | Change |"
    assert md[1] == "| --- | --- | --- | --- | --- |"
    assert md[2] == "| m.json | acc | 0.5 | 0.75 | +0.25 |"
    csv = render("csv", "Path", ["HEAD", "workspace"], rows, True, 5).splitlines()
    assert csv[3] == "m.json,gone,1,-,removed"
    assert csv[4] == "m.json,name,a,b,changed"
    data = json.loads(render("json", "Path", ["HEAD", "workspace"], rows, True, 5))
    assert data["m.json"]["acc"] == {"old": 0.5, "new": 0.75, "change": 0.25}
    assert data["m.json"]["added"] == {"old": None, "new": True, "change": None}
    shown = render("table", "Stage", ["workspace"], side_by_side([{"s": {"x": None}}]), False, 5)
    assert shown.splitlines()[1].split() == ["s", "x", "null"]


def test_precision_rounds_floats_only_in_text() -> None:
    rows = side_by_side([{"m": {"a": 1 / 3}}])
    assert render("table", "Path", ["w"], rows, False, 2).splitlines()[1].split()[-1] == "0.33"
    assert json.loads(render("json", "Path", ["w"], rows, False, 2))["m"]["a"]["value"] == 1 / 3
