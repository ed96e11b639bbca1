"""First `pivot run --all -j 1` of the multi project: wall, CPU and minor page faults of the
whole process tree per executed stage, for one or more Pivot source trees, interleaved.

    .venv/bin/python bench/first_runs.py --shape 10x20 --reps 3 TREE [TREE ...]

Each TREE is a checkout of Pivot (e.g. this one and a `git worktree` of main); it is put
first on PYTHONPATH of `python -m pivot`. Every sample runs in a freshly generated project
(`generate.py multi`, `git init`, `pivot init`), and the trees take turns, so that a load
that changes during the run weighs on all of them alike. CPU is user + system time of the
process tree (`getrusage(RUSAGE_CHILDREN)` around the command): on a loaded machine it
moves much less than the wall clock.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import generate


def _pivot(tree: str, args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": tree}
    return subprocess.run(
        [sys.executable, "-m", "pivot", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def _fresh(dest: pathlib.Path, tree: str, pipes: int, stages: int) -> None:
    generate.generate_multi(dest, "pivot", pipes, stages)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    done = _pivot(tree, ["init"], dest)
    if done.returncode:
        raise SystemExit(f"pivot init failed in {dest}:\n{done.stderr}")


def sample(tree: str, pipes: int, stages: int, base: pathlib.Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and minor faults of one first run in a fresh project."""
    dest = pathlib.Path(tempfile.mkdtemp(prefix="first-run-", dir=base))
    try:
        _fresh(dest, tree, pipes, stages)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = _pivot(tree, ["run", "--all", "-j", "1"], dest)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            raise SystemExit(f"pivot run failed with {tree}:\n{done.stderr[-2000:]}")
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return wall, cpu, after.ru_minflt - before.ru_minflt
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", help="Pivot source trees to compare")
    p.add_argument("--shape", default="10x20", help="PIPELINESxSTAGES of the multi project")
    p.add_argument("--reps", type=int, default=3, help="samples per tree")
    p.add_argument("--workdir", default=str(pathlib.Path(__file__).parent / "work"))
    a = p.parse_args()
    pipes, stages = (int(n) for n in a.shape.split("x"))
    total = pipes * stages
    base = pathlib.Path(a.workdir)
    base.mkdir(parents=True, exist_ok=True)
    trees = [str(pathlib.Path(tree).resolve()) for tree in a.trees]
    for _ in range(a.reps):
        for tree in trees:
            wall, cpu, faults = sample(tree, pipes, stages, base)
            print(
                f"{tree}  {total} stages  wall {wall:.3f} s ({wall / total * 1000:.1f} ms/stage)"
                f"  CPU {cpu:.3f} s ({cpu / total * 1000:.2f} ms/stage)"
                f"  minor faults/stage {faults / total:.0f}  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
