"""Pivot vs DVC, side by side, on the same generated projects and the same machine.

    bash bench/setup.sh                      # once: DVC 3.x (+ dvc-s3) in bench/work/dvc-venv
    /work/venv/bin/python bench/run_bench.py [--only chain,multi] [--reps 5] [--json out.json]

Pivot is the `pivot` console script next to the running interpreter (override with
`--pivot "CMD ..."`), DVC the one in bench/work/dvc-venv (override with `--dvc`). Every
project is generated fresh under bench/work/ (gitignored), `git init`-ed and committed, then
`pivot init` / `dvc init`-ed. Each timing is the wall clock of one subprocess; a row shows
the median of its samples (the JSON output keeps every sample).

Sections (run in this order; `--only` picks some):
    chain   one pipeline of 200 chained stages: first run, no-op run, `--help`
    multi   10 pipelines p0..p9 of 20 chained stages, p{k} reading p{k-1}'s last output:
            first `run --all` / `repro -P`, no-op of both, and no-op from p9 alone

A later benchmark (remote push/pull against a loopback S3, restore in a fresh clone) is
one more function decorated with `@section("name")` that returns `Row`s; `Bench` gives it
the tools, the fresh-project helpers and the timing helpers.

The table shows medians (with the fastest sample and the sample count); ratios and targets
use the medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import generate

BENCH_DIR = pathlib.Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / "work"
DVC_VENV = WORK_DIR / "dvc-venv"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
PIVOT_UP_TO_DATE = "Every stage is up to date"
DVC_UP_TO_DATE = "Data and pipelines are up to date."
# Pivot must not import these for `--help` or a no-op run (remote and optional extras).
HEAVY_MODULES = ("s3fs", "boto3", "botocore", "aiobotocore", "fsspec", "pandas", "rich", "tqdm")


# -- results -------------------------------------------------------------------------------


@dataclass
class Timing:
    """The samples of one measurement, in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)


@dataclass
class Target:
    """A goal for Pivot: at most `ratio` x DVC's time and/or at most `seconds` absolute."""

    ratio: float | None = None
    seconds: float | None = None

    def describe(self) -> str:
        parts = []
        if self.ratio is not None:
            parts.append(f"<= 1/{round(1 / self.ratio)} DVC")
        if self.seconds is not None:
            parts.append(f"< {self.seconds:g} s")
        return ", ".join(parts) or "-"

    def met(self, pivot: Timing | None, dvc: Timing | None) -> bool | None:
        if pivot is None or (self.ratio is None and self.seconds is None):
            return None
        ok = True
        if self.ratio is not None:
            if dvc is None:
                return None
            ok = ok and pivot.median <= self.ratio * dvc.median
        if self.seconds is not None:
            ok = ok and pivot.median < self.seconds
        return ok


@dataclass
class Row:
    section: str
    metric: str
    pivot: Timing | None
    dvc: Timing | None
    target: Target = field(default_factory=Target)
    note: str = ""


def _fmt(t: Timing | None) -> str:
    if t is None:
        return "-"
    n = len(t.samples)
    return f"{t.median:.3f} s" + (f" (min {t.best:.3f}, n={n})" if n > 1 else "")


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| Section | Measurement | Pivot | DVC | Pivot / DVC | Target | Met |",
        "| --- | --- | ---: | ---: | ---: | --- | :---: |",
    ]
    for r in rows:
        ratio = f"{r.pivot.median / r.dvc.median:.3f}" if r.pivot and r.dvc else "-"
        speedup = f" ({r.dvc.median / r.pivot.median:.1f}x)" if r.pivot and r.dvc else ""
        met = {True: "yes", False: "**no**", None: "-"}[r.target.met(r.pivot, r.dvc)]
        metric = r.metric + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {r.section} | {metric} | {_fmt(r.pivot)} | {_fmt(r.dvc)} | {ratio}{speedup} "
            f"| {r.target.describe()} | {met} |"
        )
    return "\n".join(lines)


# -- running things ------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


@dataclass
class Tool:
    """A command prefix (e.g. ['/venv/bin/pivot']) and the environment to run it in."""

    name: str
    cmd: list[str]
    env: dict[str, str]


class Bench:
    """Tools, options and helpers shared by every section."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = pathlib.Path(args.workdir).resolve()
        self.reps = args.reps
        self.notes: dict[str, str] = {}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        pivot_cmd = shlex.split(args.pivot) if args.pivot else [_default_pivot()]
        self.pivot = Tool("pivot", pivot_cmd, dict(base_env))
        dvc_bin = pathlib.Path(args.dvc).resolve().parent
        dvc_env = dict(base_env)
        # `python` in the DVC stage commands resolves to a real interpreter (no shim).
        dvc_env["PATH"] = f"{dvc_bin}{os.pathsep}{dvc_env.get('PATH', '')}"
        dvc_env["DVC_NO_ANALYTICS"] = "1"
        self.dvc = Tool("dvc", [str(pathlib.Path(args.dvc).resolve())], dvc_env)

    # running and timing

    def call(self, tool: Tool, args: list[str], cwd: pathlib.Path) -> tuple[float, str]:
        """Run `tool args` in `cwd`; return (wall seconds, stdout+stderr). Fails loudly."""
        start = time.perf_counter()
        proc = subprocess.run(
            [*tool.cmd, *args],
            cwd=cwd,
            env=tool.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise BenchError(
                f"`{tool.name} {' '.join(args)}` in {cwd} exited {proc.returncode}:\n{output}"
            )
        return elapsed, output

    def repeat(
        self,
        tool: Tool,
        args: list[str],
        cwd: pathlib.Path,
        reps: int | None = None,
        expect: str | None = None,
    ) -> Timing:
        samples = []
        for _ in range(reps or self.reps):
            seconds, output = self.call(tool, args, cwd)
            if expect is not None and expect not in output:
                raise BenchError(
                    f"`{tool.name} {' '.join(args)}` did not say {expect!r}:\n{output}"
                )
            samples.append(seconds)
        return Timing(samples)

    def imported_modules(self, tool: Tool, args: list[str], cwd: pathlib.Path) -> set[str]:
        """Top-level names of the modules a command imports (PYTHONPROFILEIMPORTTIME)."""
        env = dict(tool.env, PYTHONPROFILEIMPORTTIME="1")
        proc = subprocess.run(
            [*tool.cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
        )
        names = set()
        for line in proc.stderr.splitlines():
            if line.startswith("import time:") and line.count("|") == 2:
                name = line.rsplit("|", 1)[1].strip()
                if name != "package":
                    names.add(name.split(".")[0])
        return names

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # fresh projects

    def fresh_project(
        self, name: str, tool: str, make: Callable[[pathlib.Path], pathlib.Path]
    ) -> pathlib.Path:
        """Regenerate bench/work/NAME with `make(dest)`, git + tool initialised.

        Returns what `make` returned (the path of the pipeline's final output).
        """
        dest = self.work / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        final = make(dest)
        _git(dest, "init", "-q")
        if tool == "pivot":
            self.call(self.pivot, ["init"], dest)
        else:
            site_cache = self.work / "dvc-site-cache" / name
            if site_cache.exists():
                shutil.rmtree(site_cache)
            self.call(self.dvc, ["init", "-q"], dest)
            self.call(self.dvc, ["config", "core.analytics", "false"], dest)
            self.call(self.dvc, ["config", "core.check_update", "false"], dest)
            # DVC 3 keeps its state/index under a machine-wide site cache; give every fresh
            # project its own so no earlier run can help or hinder it.
            self.call(self.dvc, ["config", "--local", "core.site_cache_dir", str(site_cache)], dest)
        _git(dest, "add", "-A")
        _git(dest, "commit", "-q", "-m", "generated")
        return final


def _git(cwd: pathlib.Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def _default_pivot() -> str:
    here = pathlib.Path(sys.executable).parent / "pivot"
    found = str(here) if here.exists() else shutil.which("pivot")
    if not found:
        raise SystemExit("No `pivot` next to this interpreter or on PATH; pass --pivot CMD.")
    return found


def _check_final(path: pathlib.Path, expected: int, who: str) -> None:
    got = path.read_text().strip() if path.exists() else "<missing>"
    if got != str(expected):
        raise BenchError(f"{who}: {path} holds {got!r}, expected {expected} after the run.")


def _check_ran(output: str, count: int, who: str) -> None:
    m = re.search(r"(\d+) ran", output)
    if not m or int(m.group(1)) != count:
        raise BenchError(f"{who}: expected {count} stages to run; output ends:\n{output[-2000:]}")


# -- sections ------------------------------------------------------------------------------

Section = Callable[[Bench], list[Row]]
SECTIONS: dict[str, Section] = {}


def section(name: str) -> Callable[[Section], Section]:
    def register(func: Section) -> Section:
        SECTIONS[name] = func
        return func

    return register


def _first_runs(
    b: Bench,
    name: str,
    tool: Tool,
    make: Callable[[pathlib.Path], pathlib.Path],
    args: list[str],
    runs: int,
    expected: int,
) -> Timing:
    """Time `runs` first runs, each in a freshly generated project; the last one is kept."""
    samples = []
    for i in range(runs):
        b.log(f"{name}: fresh project, first `{tool.name} {' '.join(args)}` ({i + 1}/{runs})")
        final = b.fresh_project(name, tool.name, make)
        seconds, output = b.call(tool, args, b.work / name)
        _check_final(final, expected, f"{tool.name} {name}")
        if tool.name == "pivot":
            _check_ran(output, expected, f"pivot {name}")
        elif "Running stage" not in output:
            raise BenchError(f"dvc {name}: no stage ran:\n{output[-2000:]}")
        samples.append(seconds)
    return Timing(samples)


@section("chain")
def bench_chain(b: Bench) -> list[Row]:
    stages = b.args.chain_stages
    note = f"{stages} stages"

    def make(tool: str) -> Callable[[pathlib.Path], pathlib.Path]:
        return lambda dest: generate.generate_chain(dest, tool, stages)

    pv_first = _first_runs(
        b, "chain-pivot", b.pivot, make("pivot"), ["run"], b.args.first_runs, stages
    )
    b.log("chain: pivot no-op runs")
    pv_noop = b.repeat(b.pivot, ["run"], b.work / "chain-pivot", expect=PIVOT_UP_TO_DATE)
    dvc_first = _first_runs(
        b, "chain-dvc", b.dvc, make("dvc"), ["repro"], b.args.dvc_first_runs, stages
    )
    b.log("chain: dvc no-op runs")
    dvc_noop = b.repeat(b.dvc, ["repro"], b.work / "chain-dvc", expect=DVC_UP_TO_DATE)
    b.log("chain: heavy imports")
    for label, args in (("`pivot --help`", ["--help"]), ("no-op `pivot run`", ["run"])):
        heavy = sorted(
            b.imported_modules(b.pivot, args, b.work / "chain-pivot") & set(HEAVY_MODULES)
        )
        b.notes[f"heavy modules imported by {label}"] = ", ".join(heavy) or "none"
    b.log("chain: --help")
    help_reps = max(b.reps, 10)
    b.call(b.pivot, ["--help"], b.work)  # warm the page cache, as for every other command
    pv_help = b.repeat(b.pivot, ["--help"], b.work, reps=help_reps)
    dvc_help = b.repeat(b.dvc, ["--help"], b.work, reps=help_reps)
    return [
        Row("chain", "first `run` / `repro`", pv_first, dvc_first, Target(ratio=0.1), note),
        Row("chain", "no-op `run` / `repro`", pv_noop, dvc_noop, Target(0.1, 0.25), note),
        Row("chain", "`--help`", pv_help, dvc_help, Target(seconds=0.15)),
    ]


@section("multi")
def bench_multi(b: Bench) -> list[Row]:
    pipes, stages = b.args.multi_pipelines, b.args.multi_stages
    total = pipes * stages
    note = f"{pipes} x {stages} stages"
    last = f"p{pipes - 1}"

    def make(tool: str) -> Callable[[pathlib.Path], pathlib.Path]:
        return lambda dest: generate.generate_multi(dest, tool, pipes, stages)

    pv_first = _first_runs(
        b, "multi-pivot", b.pivot, make("pivot"), ["run", "--all"], b.args.first_runs, total
    )
    b.log("multi: pivot no-op runs")
    pv_root = b.work / "multi-pivot"
    pv_noop = b.repeat(b.pivot, ["run", "--all"], pv_root, expect=PIVOT_UP_TO_DATE)
    pv_last = b.repeat(b.pivot, ["run"], pv_root / last, expect=PIVOT_UP_TO_DATE)
    dvc_first = _first_runs(
        b, "multi-dvc", b.dvc, make("dvc"), ["repro", "-P"], b.args.dvc_first_runs, total
    )
    b.log("multi: dvc no-op runs")
    dvc_root = b.work / "multi-dvc"
    dvc_noop = b.repeat(b.dvc, ["repro", "-P"], dvc_root, expect=DVC_UP_TO_DATE)
    dvc_last = b.repeat(b.dvc, ["repro"], dvc_root / last, expect=DVC_UP_TO_DATE)
    return [
        Row("multi", "first `run --all` / `repro -P`", pv_first, dvc_first, Target(0.1), note),
        Row("multi", "no-op `run --all` / `repro -P`", pv_noop, dvc_noop, Target(0.1, 0.3), note),
        Row(
            "multi",
            f"no-op `run` / `repro` in {last}",
            pv_last,
            dvc_last,
            Target(0.1, 0.3),
            f"{total} stages upstream",
        ),
    ]


# -- environment ---------------------------------------------------------------------------


def _first_line(cmd: list[str], env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def environment(b: Bench) -> dict[str, str]:
    cpu = "?"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(pathlib.Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    dvc_python = str(pathlib.Path(b.args.dvc).resolve().parent / "python")
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "pivot": _first_line([*b.pivot.cmd, "--version"], b.pivot.env),
        "pivot command": " ".join(b.pivot.cmd),
        "pivot git": _first_line(["git", "-C", str(BENCH_DIR), "describe", "--always", "--dirty"]),
        "pivot python": platform.python_version() + f" ({sys.executable})",
        "dvc": _first_line([*b.dvc.cmd, "--version"], b.dvc.env),
        "dvc python": _first_line([dvc_python, "--version"]),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Pivot vs DVC benchmarks.")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help=f"comma-separated sections to run (default: all of {', '.join(SECTIONS)})",
    )
    p.add_argument("--reps", type=int, default=5, help="samples per no-op measurement")
    p.add_argument(
        "--first-runs", type=int, default=3, help="fresh first runs timed for Pivot (cheap)"
    )
    p.add_argument("--dvc-first-runs", type=int, default=1, help="fresh first runs for DVC")
    p.add_argument("--chain-stages", type=int, default=200)
    p.add_argument("--multi-pipelines", type=int, default=10)
    p.add_argument("--multi-stages", type=int, default=20)
    p.add_argument("--pivot", help="command that runs pivot (default: `pivot` beside python)")
    p.add_argument("--dvc", default=str(DVC_VENV / "bin" / "dvc"), help="the dvc executable")
    p.add_argument("--workdir", default=str(WORK_DIR), help="where projects are generated")
    p.add_argument("--json", type=pathlib.Path, help="also write every sample here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [s.strip() for item in args.only for s in item.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"Unknown section(s) {unknown}; known: {', '.join(SECTIONS)}.")
    if not pathlib.Path(args.dvc).exists():
        raise SystemExit(f"No DVC at {args.dvc}; run `bash bench/setup.sh` first.")
    b = Bench(args)
    b.work.mkdir(parents=True, exist_ok=True)
    env = environment(b)
    rows: list[Row] = []
    for name in chosen or list(SECTIONS):
        rows += SECTIONS[name](b)
    env["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    env.update(b.notes)
    print()
    print(markdown_table(rows))
    print()
    for key, value in env.items():
        print(f"- {key}: {value}")
    if args.json:
        payload = {
            "environment": env,
            "argv": sys.argv,
            "rows": [
                {**asdict(r), "met": r.target.met(r.pivot, r.dvc), "target": r.target.describe()}
                for r in rows
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
