"""Reading metrics files into flat values, and the values a lock file may hold."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pivot.define.metric_values import (
    MAX_FILE_BYTES,
    MAX_KEYS,
    check_values,
    flatten_params,
    parse_metrics,
)
from pivot.define.results import Metric, MetricFile, Plot, PlotFile
from pivot.errors import PivotError
from pivot.run.lockfile import Lock, parse_lock


def test_json_nested_and_lists_flatten_to_dotted_keys() -> None:
    data = json.dumps({"acc": 0.9, "loss": {"train": 0.1, "val": 0.2}, "top": [1, 2]})
    assert parse_metrics(data.encode(), "m.json") == {
        "acc": 0.9,
        "loss.train": 0.1,
        "loss.val": 0.2,
        "top.0": 1,
        "top.1": 2,
    }


def test_yaml_and_csv() -> None:
    assert parse_metrics(b"acc: 0.5\nname: resnet\nok: true\n", "m.yaml") == {
        "acc": 0.5,
        "name": "resnet",
        "ok": True,
    }
    assert parse_metrics(b"acc,loss,name\n0.9,3,best\n", "m.csv") == {
        "acc": 0.9,
        "loss": 3,
        "name": "best",
    }
    assert parse_metrics(b"fold,acc\n0,0.5\n1,0.7\n", "m.csv") == {
        "0.fold": 0,
        "0.acc": 0.5,
        "1.fold": 1,
        "1.acc": 0.7,
    }


@pytest.mark.parametrize(
    ("path", "data", "words"),
    [
        ("m.json", b"{not json", ["m.json", "not valid JSON"]),
        ("m.yaml", b"a: [1, 2", ["m.yaml", "not valid YAML"]),
        ("m.csv", b"a,b\n1,2,3\n", ["m.csv", "not valid CSV"]),
        ("m.json", b"\xff\xfe", ["m.json", "not valid JSON"]),
        ("m.json", b"3.5", ["m.json", "single float"]),
        ("m.json", b'{"acc": null}', ["m.json", "'acc'", "not a metric"]),
        ("m.json", b'{"acc": {}}', ["m.json", "'acc'", "not a metric"]),
        ("m.json", b'{"acc": NaN}', ["m.json", "'acc'", "not a metric"]),
        ("m.json", json.dumps({"t": "x" * 300}).encode(), ["'t'", "not a metric"]),
        ("m.txt", b"acc 1", ["m.txt", ".json, .yaml, .yml or .csv"]),
    ],
)
def test_bad_metrics_files_are_named(path: str, data: bytes, words: list[str]) -> None:
    with pytest.raises(PivotError) as err:
        parse_metrics(data, path)
    for word in words:
        assert word in str(err.value)


def test_bounds_on_size_and_keys() -> None:
    huge = b'{"a": "' + b"x" * MAX_FILE_BYTES + b'"}'
    with pytest.raises(PivotError, match="over the 1,048,576-byte limit"):
        parse_metrics(huge, "big.json")
    many = json.dumps({f"k{i}": i for i in range(MAX_KEYS + 1)}).encode()
    with pytest.raises(PivotError, match=f"more than {MAX_KEYS} values"):
        parse_metrics(many, "many.json")


def test_params_flatten_keeps_lists_and_nulls() -> None:
    assert flatten_params({"opt": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": None}) == {
        "opt.lr": 0.1,
        "opt.betas": [0.9, 0.99],
        "seed": None,
    }


def test_declarations_choose_loaders_and_refuse_unknown_formats(tmp_path: pathlib.Path) -> None:
    assert Metric("m.yaml").loader == MetricFile("yaml")
    assert Plot("p.jsonl").loader == PlotFile("jsonl")
    assert Plot("p.png").loader == PlotFile("image")
    with pytest.raises(PivotError, match=r"pivot.Metric\('m.txt'\)"):
        Metric("m.txt")
    with pytest.raises(PivotError, match="unknown template 'pie'"):
        Plot("p.csv", template="pie")
    with pytest.raises(PivotError, match="confusion template needs x"):
        Plot("p.csv", template="confusion")
    # A stage may return the values, or write the file itself and return its path.
    MetricFile("csv").save({"acc": 0.5, "n": 3}, tmp_path / "m.csv")
    assert parse_metrics((tmp_path / "m.csv").read_bytes(), "m.csv") == {"acc": 0.5, "n": 3}
    (tmp_path / "own.json").write_text('{"x": 1}')
    MetricFile("json").save(tmp_path / "own.json", tmp_path / "own.json")
    assert (tmp_path / "own.json").read_text() == '{"x": 1}'
    PlotFile("csv").save({"step": [0, 1], "loss": [0.5, 0.25]}, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text() == "step,loss\n0,0.5\n1,0.25\n"


LOCK = Lock(
    stage_id="p/s",
    run_key="a" * 64,
    fingerprint={},
    params={"alpha": 0.1},
    deps={},
    outs={"m.json": {"hash": "b" * 64, "size": 10, "kind": "file"}},
)


def _lock_with(metrics: object) -> str:
    body = json.loads(LOCK.to_json())
    body["metrics"] = metrics
    return json.dumps(body)


def test_lock_files_keep_metrics_and_old_ones_still_load() -> None:
    assert "metrics" not in json.loads(LOCK.to_json())  # byte-identical to older locks
    old = parse_lock(LOCK.to_json(), pathlib.Path("x.lock"))
    assert old.metrics == {}
    text = _lock_with({"m.json": {"acc": 0.5, "name": "a"}})
    assert parse_lock(text, pathlib.Path("x.lock")).metrics == {"m.json": {"acc": 0.5, "name": "a"}}


@pytest.mark.parametrize(
    "metrics",
    [
        [1],
        {"m.json": [1]},
        {"m.json": {"acc": None}},
        {"m.json": {"acc": {"deep": 1}}},
        {"m.json": {"": 1}},
        {"m.json": {"k" * 300: 1}},
        {"m.json": {f"k{i}": i for i in range(MAX_KEYS + 1)}},
        {"other.json": {"acc": 1}},
        {"m.json": {"acc": "x" * 300}},
    ],
)
def test_lock_files_with_bad_metrics_are_refused(metrics: object) -> None:
    with pytest.raises(PivotError, match=r"x\.lock"):
        parse_lock(_lock_with(metrics), pathlib.Path("x.lock"))


scalars = st.one_of(
    st.integers(), st.floats(allow_nan=True), st.booleans(), st.text(max_size=300), st.none()
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_fuzz_metrics_files_decode_or_refuse_cleanly(data: bytes) -> None:
    for path in ("m.json", "m.yaml", "m.csv"):
        try:
            flat = parse_metrics(data, path)
        except PivotError:
            continue
        check_values(flat, path)  # whatever is accepted fits what a lock file may hold


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_fuzz_lock_metrics_are_validated(metrics: object) -> None:
    try:
        lock = parse_lock(_lock_with({"m.json": metrics}), pathlib.Path("x.lock"))
    except PivotError:
        return
    check_values(lock.metrics["m.json"], "x")
