"""Bad metrics files: a clear one-paragraph error naming the file, exit 1, nothing
recorded (no lock file, no half-written page)."""

from __future__ import annotations

import pytest
from support import write_files

STAGE = """
import pathlib
from typing import Annotated
import pivot

pipeline = pivot.Pipeline("p")

def s() -> Annotated[pathlib.Path, pivot.Metric("{path}")]:
    pathlib.Path("{path}").write_bytes({data!r})
    return pathlib.Path("{path}")

pipeline.register(s)
"""


@pytest.mark.parametrize(
    ("path", "data", "words"),
    [
        ("m.json", b"acc: 1", ["m.json is not valid JSON"]),
        ("m.yaml", b"acc: [1", ["m.yaml is not valid YAML"]),
        ("m.json", b'{"acc": null}', ["holds null at 'acc', which is not a metric"]),
        ("m.json", b'{"acc": "' + b"x" * (1 << 20) + b'"}', ["over the 1,048,576-byte limit"]),
    ],
)
def test_a_stage_writing_a_bad_metrics_file_fails_clearly(project, pivot, path, data, words):
    write_files(project, {"pipeline.py": STAGE.format(path=path, data=data)})
    err = pivot("run", rc=1).stderr
    assert "Stage p/s" in err and "wrote a metrics file Pivot cannot read" in err
    for word in words:
        assert word in err
    assert "Traceback" not in err
    assert not (project / ".pivot" / "stages" / "p" / "s.lock").exists()


def test_a_metrics_file_of_an_unknown_format_is_refused_where_declared(project, pivot):
    write_files(project, {"pipeline.py": STAGE.format(path="m.txt", data=b"1")})
    err = pivot("run", rc=1).stderr
    assert "pivot.Metric('m.txt'): a metrics file must end in .json, .yaml, .yml, .csv" in err
    assert not (project / "m.txt").exists()


def test_a_metrics_file_damaged_after_the_run_is_named_by_show(project, pivot):
    write_files(project, {"pipeline.py": STAGE.format(path="m.json", data=b'{"acc": 1}')})
    pivot("run", "-q")
    lock = (project / ".pivot" / "stages" / "p" / "s.lock").read_text()
    assert '"acc": 1' in lock
    (project / "m.json").write_text("{oops")
    err = pivot("metrics", "show", rc=1).stderr
    assert err.startswith("Error: The metrics file m.json is not valid JSON")
    assert len(err.strip().splitlines()) == 1
    (project / "m.json").unlink()  # absent: the lock file's values are shown
    assert pivot("metrics", "show").stdout.splitlines()[1].split() == ["m.json", "acc", "1"]
