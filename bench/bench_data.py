"""Raw data and cleanup benchmarks, with run_bench.py's tools, tables and S3 server.

    .venv/bin/python bench/bench_data.py [--only track,gc,gcremote] [run_bench.py options]

Sections:
    track     `pivot track` vs `dvc add` of a folder of 10,000 x 4 KB text files (each
              sample in a fresh project; the files are written, untimed, after `git init`)
    gc        `pivot gc --dry-run` in the 200-stage chain project with 20 git branches,
              each holding the outputs of a run from a different input (Pivot only: DVC
              would need its 200-stage project run on 20 branches, about 25 minutes)
    gcremote  the push benchmark's data pushed to SeaweedFS, then half of it dropped
              (the `big` stage removed, 5,000 of the 10,000 small files kept) and
              committed: `pivot gc --remote --grace 0` vs `dvc gc -w -c -f`, with the bytes
              each frees (one sample each: a gc cannot be repeated on the same remote)
"""

from __future__ import annotations

import pathlib
import random
import re
import sys

import generate
import run_bench
from run_bench import Bench, BenchError, Row, Target, Timing, _git, _settle, section

TRACK_FILES = 10_000
TRACK_BYTES = 4096
BRANCHES = 20
WORDS = ("alpha", "beta", "gamma", "delta", "sigma", "omega", "kappa", "lambda")


def _write_files(folder: pathlib.Path, count: int, size: int) -> None:
    """`count` distinct text files of `size` bytes (the same for both tools)."""
    folder.mkdir(parents=True)
    for i in range(count):
        rng = random.Random(i)
        text = f"file {i:05d}\n" + " ".join(rng.choices(WORDS, k=size // 5))
        (folder / f"f{i:05d}.txt").write_text(text[:size])


@section("track")
def bench_track(b: Bench) -> list[Row]:
    timings: dict[str, Timing] = {}
    for tool, reps, verb in ((b.pivot, 3, "track"), (b.dvc, 2, "add")):
        timing = Timing([])
        for i in range(reps):
            root = b.work / f"data-track-{tool.name}-{i + 1}"
            b.fresh_project(root.name, tool.name, lambda dest: None)
            _write_files(root / "data" / "raw", TRACK_FILES, TRACK_BYTES)
            _settle()
            b.log(f"track: `{tool.name} {verb} data/raw` ({i + 1}/{reps})")
            seconds, _ = b.call(tool, [verb, "data/raw"], root)
            timing.add(seconds, b.last_cpu)
        timings[tool.name] = timing
    note = f"{TRACK_FILES:,} x {TRACK_BYTES // 1024} KB"
    return [
        Row(
            "track",
            "`track` / `add` of a folder",
            timings["pivot"],
            timings["dvc"],
            Target(ratio=1 / 5),
            note,
        )
    ]


@section("gc")
def bench_gc(b: Bench) -> list[Row]:
    root = b.work / "data-gc-pivot"
    b.fresh_project(root.name, "pivot", lambda dest: generate.generate_chain(dest, "pivot"))
    for k in range(BRANCHES):
        _git(root, "checkout", "-q", "-B", f"branch{k:02d}")
        (root / "input.txt").write_text(f"{k * 1000}\n")
        b.log(f"gc: running the 200 stages on branch {k + 1}/{BRANCHES}")
        b.call(b.pivot, ["run"], root)
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", f"branch {k}")
    _, output = b.call(b.pivot, ["gc", "-n"], root)
    if "Would remove 0 object(s)" not in output:
        raise BenchError(f"pivot gc -n would remove objects some branch needs:\n{output}")
    timing = b.repeat(b.pivot, ["gc", "-n"], root)
    note = f"{BRANCHES} branches x 200 stages"
    what = "`gc --dry-run` reading every branch"
    return [Row("gc", what, timing, None, Target(seconds=1.0), note)]


def _remote_gc(b: Bench, tool) -> tuple[Timing, tuple[int, int], tuple[int, int]]:
    """Push the data project, drop half of it, commit, and time the remote gc."""
    server = b.s3()
    name = f"data-gcremote-{tool.name}"
    root = b.work / name
    bucket = f"{tool.name}-gc-bench"
    server.create_bucket(bucket)
    b.fresh_project(name, tool.name, lambda dest: generate.generate_remote(dest, tool.name))
    prefix = f"{b.run_id}-gc"
    run_bench._set_remote(b, tool, root, f"s3://{bucket}/{prefix}", server.endpoint, new=True)
    b.log(f"gcremote: {tool.name} makes the data and pushes it")
    b.call(tool, ["run" if tool.name == "pivot" else "repro"], root)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "data")
    b.call(tool, ["push"], root)
    before = server.usage(bucket, prefix + "/")
    generate.generate_remote(root, tool.name, files=TRACK_FILES // 2)
    if tool.name == "pivot":
        pipeline = root / "pipeline.py"
        pipeline.write_text(pipeline.read_text().replace("pipeline.register(big)\n", ""))
        for path in generate.BIG_FILES:
            (root / path).unlink(missing_ok=True)
        # A removed stage's lock file goes with it (Pivot warns about a lock of no stage).
        _git(root, "rm", "-q", ".pivot/stages/data/big.lock")
        args = ["gc", "--remote", "--grace", "0"]
    else:
        dvc_yaml = root / "dvc.yaml"
        dvc_yaml.write_text(re.sub(r"  big:\n(    .*\n|      .*\n)*", "", dvc_yaml.read_text()))
        args = ["gc", "-w", "-c", "-f"]
    b.log(f"gcremote: {tool.name} drops half of the outputs")
    b.call(tool, ["run" if tool.name == "pivot" else "repro"], root)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "half")
    _settle()
    b.log(f"gcremote: `{tool.name} {' '.join(args)}`")
    seconds, _ = b.call(tool, args, root)
    timing = Timing([])
    timing.add(seconds, b.last_cpu)
    return timing, before, server.usage(bucket, prefix + "/")


@section("gcremote")
def bench_gc_remote(b: Bench) -> list[Row]:
    pv, pv_before, pv_after = _remote_gc(b, b.with_s3(b.pivot))
    dv, dv_before, dv_after = _remote_gc(b, b.with_s3(b.dvc))
    for who, before, after in (("pivot", pv_before, pv_after), ("dvc", dv_before, dv_after)):
        b.notes[f"gcremote: {who} objects / MB on the remote before -> after"] = (
            f"{before[0]:,} / {before[1] / 1e6:.1f} -> {after[0]:,} / {after[1] / 1e6:.1f} "
            f"(freed {(before[1] - after[1]) / 1e6:.1f} MB)"
        )
    note = "half of 10,000 x 4 KB + 4 x 64 MB dropped"
    return [Row("gcremote", "`gc --remote` / `gc -w -c`", pv, dv, Target(), note)]


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a.startswith("--only") for a in argv):
        argv = ["--only", "track,gc,gcremote", *argv]
    sys.exit(run_bench.main(argv))
