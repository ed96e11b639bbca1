"""Metrics and plots, Pivot vs DVC, side by side on the same data and machine.

    .venv/bin/python bench/results_bench.py [--reps 5] [--dvc PATH] [--json out.json]

Pivot is `python -m pivot` of this checkout (the interpreter running this script), DVC the
`dvc` of bench/work/dvc-venv (see bench/setup.sh; override with `--dvc`). Projects are
generated under bench/work/results/ (deleted first), each a git repository.

    metrics  200 independent stages, each writing a small metrics file (4 values). Eleven
             commits: every stage run, then 9 commits each changing one stage's param,
             then one changing every stage's param. Timed: `metrics diff HEAD~10` (the
             oldest commit against the workspace) and `metrics show`. DVC gets the same
             200 files as `cache: false` metrics of 200 stages in dvc.yaml, committed in
             the same 11 commits (its `metrics diff` reads them from git; no `dvc repro`
             is needed to make them), so both read 200 small records per revision.
    plots    20 plots of 10,000 points (CSV, x=step, y=loss): `plots show` of the
             workspace. Pivot: a stage writing 20 `pivot.Plot` outputs, run once; its
             first `plots show` also bundles the Vega JavaScript (kept in .pivot/tmp/),
             timed apart as `first`. DVC: the same 20 files in dvc.yaml's top-level
             `plots:`; its page loads Vega from a CDN.

Each row is the median wall clock of `--reps` runs of one subprocess (min in brackets)
after one untimed warm-up run, and the median CPU time (user + system) of those runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

BENCH = pathlib.Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work" / "results"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
STAGES = 200
PLOTS, POINTS = 20, 10_000

PIVOT_METRICS = """
from typing import Annotated
import pivot

pipeline = pivot.Pipeline("m")
SEEDS = {seeds!r}


def make(i):
    def stage(params: dict) -> Annotated[dict, pivot.Metric(f"metrics/m{{i}}.json")]:
        s = params["seed"]
        return {{"acc": round(0.5 + (i * 7 + s) % 50 / 100, 4), "loss": round(1 / (1 + i + s), 6),
                 "train": {{"epochs": 10 + s, "lr": 0.01}}}}
    stage.__name__ = f"s{{i}}"
    return stage


for i in range({stages}):
    pipeline.register(make(i), params={{"seed": SEEDS.get(i, SEEDS["*"])}})
"""

PIVOT_PLOTS = """
import random
from typing import Annotated, TypedDict
import pivot

pipeline = pivot.Pipeline("p")
Outs = TypedDict("Outs", {{
    f"p{{k}}": Annotated[list, pivot.Plot(f"plots/p{{k}}.csv", x="step", y="loss")]
    for k in range({plots})
}})


def curves() -> Outs:
    rng = random.Random(0)
    return {{f"p{{k}}": [{{"step": i, "loss": round(1 / (i + 1) + rng.random() / 100, 6)}}
                        for i in range({points})] for k in range({plots})}}


pipeline.register(curves)
"""


# Bytecode caches are written and used, as for a user (DVC's venv has them from pip).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str], cwd: pathlib.Path, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env={**ENV, **env}, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def pivot(cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pivot", *args], cwd, PYTHONPATH=str(REPO))


def timed(
    cmd: list[str], cwd: pathlib.Path, reps: int, warm_up: bool = True, **env: str
) -> list[tuple[float, float]]:
    """`reps` samples (wall clock, CPU time of the process and its children) of `cmd`,
    after one untimed warm-up run."""
    if warm_up:
        run(cmd, cwd, **env)
    samples = []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        run(cmd, cwd, **env)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        samples.append((wall, cpu))
    return samples


def metric_values(i: int, seed: int) -> dict:
    return {
        "acc": round(0.5 + (i * 7 + seed) % 50 / 100, 4),
        "loss": round(1 / (1 + i + seed), 6),
        "train": {"epochs": 10 + seed, "lr": 0.01},
    }


def commits() -> list[dict]:
    """The seeds of each of the 11 commits: all 0; stage k changed; all 1."""
    history = [{"*": 0}]
    for k in range(1, 10):
        history.append({**history[-1], k * 20: k})
    history.append({"*": 1})
    return history


def metrics_pivot(root: pathlib.Path) -> None:
    root.mkdir(parents=True)
    run([*GIT, "init", "-q"], root)
    pivot(root, "init")
    (root / ".gitignore").write_text("metrics/\n")
    for n, seeds in enumerate(commits()):
        text = PIVOT_METRICS.format(seeds=seeds, stages=STAGES)
        (root / "pipeline.py").write_text(text)
        pivot(root, "run", "-q")
        run([*GIT, "add", "-A"], root)
        run([*GIT, "commit", "-qm", f"c{n}"], root)


def metrics_dvc(root: pathlib.Path, dvc: str) -> None:
    root.mkdir(parents=True)
    run([*GIT, "init", "-q"], root)
    run([dvc, "init", "-q"], root)
    stages = {
        f"s{i}": {"cmd": "true", "metrics": [{f"metrics/m{i}.json": {"cache": False}}]}
        for i in range(STAGES)
    }
    (root / "dvc.yaml").write_text(json.dumps({"stages": stages}, indent=1))
    (root / "metrics").mkdir()
    for n, seeds in enumerate(commits()):
        for i in range(STAGES):
            values = metric_values(i, seeds.get(i, seeds["*"]))
            (root / "metrics" / f"m{i}.json").write_text(json.dumps(values, indent=2))
        run([*GIT, "add", "-A"], root)
        run([*GIT, "commit", "-qm", f"c{n}"], root)


def plots_pivot(root: pathlib.Path) -> None:
    root.mkdir(parents=True)
    run([*GIT, "init", "-q"], root)
    pivot(root, "init")
    (root / "pipeline.py").write_text(PIVOT_PLOTS.format(plots=PLOTS, points=POINTS))
    pivot(root, "run", "-q")


def plots_dvc(root: pathlib.Path, dvc: str, source: pathlib.Path) -> None:
    root.mkdir(parents=True)
    run([*GIT, "init", "-q"], root)
    run([dvc, "init", "-q"], root)
    shutil.copytree(source / "plots", root / "plots")
    plots = [{f"plots/p{k}.csv": {"x": "step", "y": "loss"}} for k in range(PLOTS)]
    (root / "dvc.yaml").write_text(json.dumps({"plots": plots}, indent=1))


def row(name: str, samples: list[tuple[float, float]]) -> dict:
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]
    return {
        "case": name,
        "median": statistics.median(walls),
        "min": min(walls),
        "cpu": statistics.median(cpus),
        "n": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--dvc", default=str(BENCH / "work" / "dvc-venv" / "bin" / "dvc"))
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument(
        "--reuse", action="store_true", help="Time the projects an earlier run generated."
    )
    args = parser.parse_args()
    rows = []
    mp, md = WORK / "metrics-pivot", WORK / "metrics-dvc"
    pp, pd = WORK / "plots-pivot", WORK / "plots-dvc"
    if not args.reuse:
        shutil.rmtree(WORK, ignore_errors=True)
        metrics_pivot(mp)
        metrics_dvc(md, args.dvc)
        plots_pivot(pp)
        plots_dvc(pd, args.dvc, pp)
    changed = len(pivot(mp, "metrics", "diff", "HEAD~10", "--json").stdout)
    assert changed > 2, "the Pivot diff found no change"
    py = [sys.executable, "-m", "pivot"]
    env = {"PYTHONPATH": str(REPO)}
    rows.append(
        row(
            "pivot metrics diff HEAD~10",
            timed([*py, "metrics", "diff", "HEAD~10"], mp, args.reps, **env),
        )
    )
    rows.append(
        row(
            "dvc metrics diff HEAD~10",
            timed([args.dvc, "metrics", "diff", "HEAD~10"], md, args.reps),
        )
    )
    rows.append(row("pivot metrics show", timed([*py, "metrics", "show"], mp, args.reps, **env)))
    rows.append(row("dvc metrics show", timed([args.dvc, "metrics", "show"], md, args.reps)))
    rows.append(
        row(
            "pivot params diff HEAD~10",
            timed([*py, "params", "diff", "HEAD~10"], mp, args.reps, **env),
        )
    )

    for bundle in (pp / ".pivot" / "tmp").glob("vega-bundle-*.js"):
        bundle.unlink()
    first = timed([*py, "plots", "show"], pp, 1, warm_up=False, **env)
    rows.append(row("pivot plots show, first (bundles Vega)", first))
    rows.append(row("pivot plots show", timed([*py, "plots", "show"], pp, args.reps, **env)))
    rows.append(row("dvc plots show", timed([args.dvc, "plots", "show"], pd, args.reps)))

    width = max(len(r["case"]) for r in rows)
    for r in rows:
        print(
            f"{r['case']:<{width}}  {r['median']:7.2f} s  [min {r['min']:.2f}, n={r['n']}]  "
            f"CPU {r['cpu']:.2f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
