"""First `pivot run --all -j 1` of the multi project: wall, CPU and minor page faults of the
whole process tree per executed stage, for one or more Pivot source trees, interleaved.

    .venv/bin/python bench/first_runs.py --shape 10x20 --reps 3 TREE [TREE ...]

Each TREE is a checkout of Pivot (e.g. this one and a `git worktree` of main); it is put
first on PYTHONPATH of `python -m pivot`. Every sample runs in a freshly generated project
(`generate.py multi`, `git init`, `pivot init`), kept until the last sample, and the trees
take turns, so that a load that changes during the run weighs on all of them alike. CPU is
user + system time of the process tree (`getrusage(RUSAGE_CHILDREN)` around the command):
on a loaded machine it moves much less than the wall clock.

With `--deleted N`, each sample is preceded by creating N files of 1 KB in a scratch
folder, `sync`, deleting them and `sync` again (untimed): what the file system does in the
minutes after many deletions (on an ext4 mounted with `discard`, the freed blocks are
trimmed as the journal commits) then weighs on the run's own file creations and flushes.
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


def _delete_files(base: pathlib.Path, files: int) -> None:
    """Create `files` files of 1 KB in a scratch folder, flush, delete them, flush."""
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="deleted-", dir=base))
    data = b"x" * 1024
    for i in range(files):
        (scratch / f"f{i}").write_bytes(data)
    os.sync()
    shutil.rmtree(scratch)
    os.sync()


def sample(
    tree: str, pipes: int, stages: int, dest: pathlib.Path, deleted: int = 0
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and minor faults of one first run in the fresh project
    `dest` (right after `deleted` files were deleted, if any)."""
    _fresh(dest, tree, pipes, stages)
    if deleted:
        _delete_files(dest.parent, deleted)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = _pivot(tree, ["run", "--all", "-j", "1"], dest)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"pivot run failed with {tree}:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, after.ru_minflt - before.ru_minflt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="+", help="Pivot source trees to compare")
    p.add_argument("--shape", default="10x20", help="PIPELINESxSTAGES of the multi project")
    p.add_argument("--reps", type=int, default=3, help="samples per tree")
    p.add_argument("--deleted", type=int, default=0, help="files deleted before each sample")
    p.add_argument("--workdir", default=str(pathlib.Path(__file__).parent / "work"))
    a = p.parse_args()
    pipes, stages = (int(n) for n in a.shape.split("x"))
    total = pipes * stages
    base = pathlib.Path(a.workdir)
    base.mkdir(parents=True, exist_ok=True)
    trees = [str(pathlib.Path(tree).resolve()) for tree in a.trees]
    # The projects are deleted only after the last sample: deleting one before the next
    # sample would time that sample in the file system's state after deletions.
    projects = pathlib.Path(tempfile.mkdtemp(prefix="first-runs-", dir=base))
    try:
        for rep in range(a.reps):
            for k, tree in enumerate(trees):
                dest = projects / f"{rep}-{k}"
                wall, cpu, faults = sample(tree, pipes, stages, dest, a.deleted)
                print(
                    f"{tree}  {total} stages  wall {wall:.3f} s"
                    f" ({wall / total * 1000:.1f} ms/stage)"
                    f"  CPU {cpu:.3f} s ({cpu / total * 1000:.2f} ms/stage)"
                    f"  minor faults/stage {faults / total:.0f}"
                    f"  load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(projects, ignore_errors=True)


if __name__ == "__main__":
    main()
