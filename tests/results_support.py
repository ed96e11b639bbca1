"""A real git history of a small training project, for `metrics`, `params` and `plots`.

main: `before` (no .pivot/ yet) - `one` (alpha 0.1, pushed to a local-folder remote) -
`two` (alpha 0.5) - `three` (alpha 0.2, the workspace); branch `experiment` from `two`
(alpha 100). Outputs are git-ignored, lock files committed, as a user would.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from support import PYTHONPATH, PivotCLI, git, write_files

PIPELINE = """
import dataclasses
import pathlib
from typing import Annotated, TypedDict

import pivot

pipeline = pivot.Pipeline("train")


@dataclasses.dataclass
class Params:
    alpha: float = ALPHA
    optim: dict = dataclasses.field(default_factory=lambda: {"lr": 0.01, "name": "sgd"})


class TrainOut(TypedDict):
    metrics: Annotated[dict, pivot.Metric("metrics.json")]
    loss: Annotated[list, pivot.Plot("plots/loss.csv", x="step", y="loss", title="Loss")]


def train(params: Params) -> TrainOut:
    acc = round(1 - 1 / (2 + params.alpha), 6)
    loss = [{"step": i, "loss": round(params.alpha / (i + 1), 6)} for i in range(20)]
    return {"metrics": {"acc": acc, "train": {"loss": loss[-1]["loss"]}}, "loss": loss}


class EvalOut(TypedDict):
    scores: Annotated[dict, pivot.Metric("scores.csv")]
    confusion: Annotated[
        list, pivot.Plot("plots/confusion.json", x="actual", y="predicted", template="confusion")
    ]


def evaluate(m: Annotated[pathlib.Path, pivot.Dep("metrics.json")]) -> EvalOut:
    import json

    acc = json.loads(m.read_text())["acc"]
    labels = ["cat", "dog"]
    rows = [{"actual": labels[i % 2], "predicted": labels[(i // 3) % 2]} for i in range(12)]
    return {"scores": {"f1": round(acc * 0.9, 6), "model": "tiny"}, "confusion": rows}


pipeline.register(train)
pipeline.register(evaluate)
"""


def set_alpha(root: pathlib.Path, alpha: float) -> None:
    write_files(root, {"pipeline.py": PIPELINE.replace("ALPHA", repr(alpha))})


def build_history(base: pathlib.Path) -> pathlib.Path:
    """The project described above, in `base/proj`; its remote in `base/remote`."""
    root = base / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write_files(root, {"README.md": "a project\n"})
    git(root, "add", "-A")
    git(root, "commit", "-qm", "before")
    subprocess.run(
        [sys.executable, "-m", "pivot", "init"], cwd=root, check=True, capture_output=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )  # fmt: skip
    write_files(root, {".gitignore": "metrics.json\nscores.csv\nplots/\npivot_plots/\n"})
    pivot = PivotCLI(root)
    pivot("remote", "add", "store", str(base / "remote"))
    for message, alpha in (("one", 0.1), ("two", 0.5)):
        set_alpha(root, alpha)
        pivot("run", "-q")
        if message == "one":
            pivot("push")
        git(root, "add", "-A")
        git(root, "commit", "-qm", message)
    git(root, "checkout", "-qb", "experiment")
    set_alpha(root, 100)
    pivot("run", "-q")
    git(root, "commit", "-qam", "exp")
    git(root, "checkout", "-q", "main")
    set_alpha(root, 0.2)
    pivot("run", "-q")
    git(root, "commit", "-qam", "three")
    return root
