"""Pivot vs DVC, side by side, on the same generated projects and the same machine.

    bash bench/setup.sh                      # DVC 3.x (+ dvc-s3) in bench/work/dvc-venv, and
                                             # the checkout, non-editable, in bench/work/pivot-venv
    .venv/bin/python bench/run_bench.py [--only chain,multi] [--reps 5] [--json out.json]
    .venv/bin/python bench/run_bench.py --only remote,restore     # loopback SeaweedFS
    .venv/bin/python bench/run_bench.py --only remote --workdir /dev/shm/pivot-bench
    .venv/bin/python bench/run_bench.py --only scale [--scale-dvc-max-files 10000]

Pivot is the checkout installed non-editable in bench/work/pivot-venv (made by setup.sh,
see bench/pivot_venv.py: an editable install's import hook costs every start-up ~10 ms that
no user pays), reinstalled first when the checkout's commit or uncommitted changes under
pivot/ differ from those it was built from; without that venv, the `pivot` console script
next to the running interpreter. `--pivot "CMD ..."` overrides both; the run prints which
Pivot it times. DVC is the one in bench/work/dvc-venv (override with `--dvc`). Every
project is generated fresh under bench/work/ (gitignored), `git init`-ed and committed, then
`pivot init` / `dvc init`-ed. Each timing is the wall clock of one subprocess; a row shows
the median of its samples (the JSON output keeps every sample).

Sections (run in this order; `--only` picks some):
    chain    one pipeline of 200 chained stages: first run, no-op run, `--help`
    multi    10 pipelines p0..p9 of 20 chained stages, p{k} reading p{k-1}'s last output:
             first `run --all` / `repro -P`, no-op of both, and no-op from p9 alone
    remote   a project whose two stages write 10,000 x 4 KB text files (one directory
             output) and 4 x 64 MB files (half random, half text): `push` to an empty
             prefix, a no-op `push`, and `pull` into a fresh clone (empty cache and
             workspace)
    restore  the multi project run and pushed once; in a fresh `git clone` with an empty
             cache, `pivot run --all` (restoring every stage from the remote) against
             `dvc pull` + `dvc repro -P`
    scale    (only with `--only scale`: it takes the better part of an hour with DVC) issue
             #16's sizes: the multi project at 10 x 20, 20 x 50 and 40 x 50 stages (first
             `run --all -j 1` / `repro -P`, no-op of both), and one stage writing 10,000
             and 100,000 files of 1 KB into one directory output (first run, no-op run,
             push, no-op push, pull into a fresh clone); no-op samples of the two tools
             are taken in turn; a DVC command still running after 15 minutes is killed
             and its row left empty, and `--scale-dvc-max-stages/-files` skip DVC rows
             (`--scale-dvc-max-transfer-files` only DVC's push, no-op push and pull)

Before the first section, the folders an earlier run generated are deleted and the script
waits 370 s: on the development VM's ext4 (no journal), files created within 6 minutes of
many deletions cost up to 20x more (recently freed inodes are skipped), and whichever tool
ran first would pay.
For the same reason every first-run sample and every clone gets a folder of its own
(nothing is deleted right before a timed command), and `sync` runs (untimed) before each
timed push, pull, restore and first run, so no sample pays for writing back the data of
the one before.

`remote` and `restore` share ONE SeaweedFS server (`weed mini`, bench/s3server.py) on
127.0.0.1, started on first use under WORKDIR/seaweedfs and always stopped at the end;
each tool gets its own bucket and every push sample its own empty prefix. A section is a
function decorated with `@section("name")` that returns `Row`s; `Bench` gives it the
tools, the fresh-project helpers, the timing helpers and the S3 server.

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
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import generate
import pivot_venv

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
    """The samples of one measurement, in seconds: wall clock, and (where recorded) the
    CPU time (user + sys) of the command's process tree and of the S3 server meanwhile."""

    samples: list[float]
    cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    def add(self, seconds: float, cpu: tuple[float, float]) -> None:
        self.samples.append(seconds)
        self.cpu.append(cpu[0])
        self.server_cpu.append(cpu[1])


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


def cpu_table(rows: list[Row]) -> str:
    """Medians of the CPU seconds behind the rows that recorded them (the remote ones):
    the command's process tree, and the S3 server meanwhile. On a shared machine CPU time
    moves less than wall time, and it shows what each tool costs the server."""

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else "-"

    lines = [
        "| Section | Measurement | Pivot CPU | Server CPU (Pivot) | DVC CPU | Server CPU (DVC) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if not any(t is not None and t.server_cpu and any(t.server_cpu) for t in (r.pivot, r.dvc)):
            continue
        cells = []
        for t in (r.pivot, r.dvc):
            cells += [med(t.cpu), med(t.server_cpu)] if t is not None else ["-", "-"]
        lines.append(f"| {r.section} | {r.metric} | " + " | ".join(f"{c} s" for c in cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


# -- running things ------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


class BenchTimeout(BenchError):
    """A command ran past its time limit and was killed."""


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
        # Names remote prefixes, so no sample ever pushes onto an earlier one's data.
        self.run_id = time.strftime("%Y%m%d-%H%M%S")
        self._server = None
        self.last_cpu = (0.0, 0.0)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        pivot_cmd = shlex.split(args.pivot) if args.pivot else [_default_pivot()]
        self.pivot = Tool("pivot", pivot_cmd, dict(base_env))
        self.log(f"timing Pivot as `{' '.join(pivot_cmd)}`")
        dvc_bin = pathlib.Path(args.dvc).resolve().parent
        dvc_env = dict(base_env)
        # `python` in the DVC stage commands resolves to a real interpreter (no shim).
        dvc_env["PATH"] = f"{dvc_bin}{os.pathsep}{dvc_env.get('PATH', '')}"
        dvc_env["DVC_NO_ANALYTICS"] = "1"
        self.dvc = Tool("dvc", [str(pathlib.Path(args.dvc).resolve())], dvc_env)

    # running and timing

    def call(
        self, tool: Tool, args: list[str], cwd: pathlib.Path, timeout: float | None = None
    ) -> tuple[float, str]:
        """Run `tool args` in `cwd`; return (wall seconds, stdout+stderr). Fails loudly;
        after `timeout` seconds the command's whole process group is killed (BenchTimeout).

        Also leaves the CPU seconds of the command (and of the S3 server, if one is up) in
        `self.last_cpu`."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = self._server.cpu_seconds() if self._server is not None else 0.0
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*tool.cmd, *args],
            cwd=cwd,
            env=tool.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BenchTimeout(
                f"`{tool.name} {' '.join(args)}` in {cwd} took over {timeout:.0f} s; killed."
            ) from None
        proc = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.last_cpu = (
            (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
            (self._server.cpu_seconds() - server_cpu) if self._server is not None else 0.0,
        )
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
        timeout: float | None = None,
    ) -> Timing:
        timing = Timing([])
        for _ in range(reps or self.reps):
            seconds, output = self.call(tool, args, cwd, timeout)
            if expect is not None and expect not in output:
                raise BenchError(
                    f"`{tool.name} {' '.join(args)}` did not say {expect!r}:\n{output}"
                )
            timing.add(seconds, self.last_cpu)
        return timing

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

    def s3(self):
        """The one loopback SeaweedFS server of this benchmark run, started on first use;
        `close()` (called by main whatever happens) stops it."""
        if self._server is None:
            from s3server import SeaweedFS

            server = SeaweedFS(self.work / "seaweedfs")
            self.log(f"starting SeaweedFS (weed mini) on 127.0.0.1, data in {server.base}")
            try:
                server.start()
            except BaseException:
                server.stop()  # whatever failed, leave no server behind
                raise
            self._server = server
            self.log(f"SeaweedFS S3 at {server.endpoint}")
        return self._server

    def with_s3(self, tool: Tool) -> Tool:
        """`tool` with the AWS_* environment of the benchmark's S3 server (nothing else)."""
        return Tool(tool.name, tool.cmd, {**tool.env, **self.s3().env()})

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.log("SeaweedFS stopped")

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
    """bench/work/pivot-venv's `pivot` (reinstalled if stale), else the one next to this
    interpreter or on PATH."""
    installed = pivot_venv.ensure()
    if installed is not None:
        return str(installed)
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
    """Time `runs` first runs, each in a freshly generated project of its own (the last one,
    `name`, is kept for the no-op runs)."""
    samples = []
    folders = [f"{name}-first{i + 1}" for i in range(runs - 1)] + [name]
    for i, folder in enumerate(folders):
        b.log(f"{name}: fresh project, first `{tool.name} {' '.join(args)}` ({i + 1}/{runs})")
        final = b.fresh_project(folder, tool.name, make)
        _settle()
        seconds, output = b.call(tool, args, b.work / folder)
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


# -- remote --------------------------------------------------------------------------------

PIVOT_PUSHED = re.compile(r"pushed (\d+) blobs?")
PIVOT_PULLED = re.compile(r"pulled (\d+) blobs?")
DVC_NOTHING_TO_PUSH = "Everything is up to date."


def _manifest(root: pathlib.Path, paths: list[str]) -> dict[str, str]:
    """relative path -> md5 of every file under `paths` (to check a pull restored them)."""
    import hashlib

    found: dict[str, str] = {}
    for rel in paths:
        top = root / rel
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            found[path.relative_to(root).as_posix()] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def _rmtree(path: pathlib.Path) -> None:
    """Remove `path` (file or tree, read-only entries included) if it exists."""
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _set_remote(b: Bench, tool: Tool, root: pathlib.Path, url: str, endpoint: str, new: bool):
    if tool.name == "pivot":
        if new:
            b.call(tool, ["remote", "add", "bench", url, "--default"], root)
            b.call(tool, ["remote", "modify", "bench", "endpoint_url", endpoint], root)
        else:
            b.call(tool, ["remote", "modify", "bench", "url", url], root)
    else:
        if new:
            b.call(tool, ["remote", "add", "-d", "bench", url], root)
            b.call(tool, ["remote", "modify", "bench", "endpointurl", endpoint], root)
        else:
            b.call(tool, ["remote", "modify", "bench", "url", url], root)


@dataclass
class _DataProject:
    """A data project for `_remote_round`: `make(dest, tool)` writes it and returns its
    output paths; running its `stages` stages writes `files` files (one directory)."""

    name: str
    make: Callable[[pathlib.Path, str], list[str]]
    files: int
    stages: int


@dataclass
class _RemoteTimes:
    generate: Timing
    push: Timing | None  # None (and no-op push and pull too) when transfers were skipped
    noop: Timing | None
    pull: Timing | None
    stored: tuple[int, int]
    noop_run: Timing | None = None


def _remote_round(
    b: Bench,
    server,
    tool: Tool,
    push_reps: int,
    pull_reps: int,
    data: _DataProject,
    noop_run_reps: int = 0,
    timeout: float | None = None,
    transfers: bool = True,
) -> _RemoteTimes:
    """Generate the data project, (optionally time no-op runs,) push it `push_reps` times
    (each to an empty prefix), push again with nothing to send, then pull it `pull_reps`
    times, each into a fresh clone (empty cache and workspace). Every push and pull is
    checked. Each command is killed after `timeout` seconds (BenchTimeout). Without
    `transfers`, it stops after the no-op runs (no push, no pull)."""
    name = f"{data.name}-{tool.name}"
    root = b.work / name
    bucket = f"{tool.name}-bench"
    server.create_bucket(bucket)
    outputs: list[str] = []

    def make(dest: pathlib.Path) -> None:
        outputs[:] = data.make(dest, tool.name)

    b.log(f"{data.name}: {tool.name} project, generating the data with the pipeline")
    b.fresh_project(name, tool.name, make)
    run_args = ["run"] if tool.name == "pivot" else ["repro"]
    _settle()
    seconds, output = b.call(tool, run_args, root, timeout)
    generate_time = Timing([])
    generate_time.add(seconds, b.last_cpu)
    if tool.name == "pivot":
        _check_ran(output, data.stages, f"pivot {name}")
    expected = _manifest(root, outputs)
    if len(expected) != data.files:
        raise BenchError(f"{name}: generated {len(expected)} files, expected {data.files}.")
    blobs = data.files + 1  # + the directory manifest
    noop_run = None
    if noop_run_reps:
        b.log(f"{data.name}: no-op `{tool.name} {run_args[0]}`")
        up_to_date = PIVOT_UP_TO_DATE if tool.name == "pivot" else DVC_UP_TO_DATE
        noop_run = b.repeat(tool, run_args, root, noop_run_reps, up_to_date, timeout)
    if not transfers:
        return _RemoteTimes(generate_time, None, None, None, (0, 0), noop_run)
    # Commit the lock files, as a user would before pushing.
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "data")

    push = Timing([])
    prefix = ""
    for i in range(push_reps):
        prefix = f"{b.run_id}-{data.name}-push{i + 1}"
        _set_remote(b, tool, root, f"s3://{bucket}/{prefix}", server.endpoint, new=i == 0)
        b.log(f"{data.name}: `{tool.name} push` to an empty prefix ({i + 1}/{push_reps})")
        _settle()
        secs, out = b.call(tool, ["push"], root, timeout)
        if tool.name == "pivot":
            _check_blobs(PIVOT_PUSHED, out, blobs, "pivot push sent")
        elif f"{blobs} files pushed" not in out:
            raise BenchError(f"dvc push did not say '{blobs} files pushed':\n{out}")
        push.add(secs, b.last_cpu)
    stored = server.usage(bucket, prefix + "/")

    b.log(f"{data.name}: no-op `{tool.name} push`")
    noop_expect = "pushed 0 blobs" if tool.name == "pivot" else DVC_NOTHING_TO_PUSH
    noop = b.repeat(tool, ["push"], root, max(b.reps, 5), noop_expect, timeout)

    pull = Timing([])
    for i in range(pull_reps):
        # Machine B: a fresh clone (lock files, no outputs, empty cache) with the remote
        # configured. Nothing is deleted before the pull: on this VM's ext4, files created
        # soon after many deletions cost ~20x more, which no fresh machine pays.
        clone = _pull_clone(b, data.name, tool.name, i)
        _clone(b, root, clone)
        _copy_remote_config(b, tool, root, clone)
        b.log(f"{data.name}: `{tool.name} pull` into a fresh clone ({i + 1}/{pull_reps})")
        _settle()
        secs, out = b.call(tool, ["pull"], clone, timeout)
        if tool.name == "pivot":
            _check_blobs(PIVOT_PULLED, out, blobs, "pivot pull fetched")
        got = _manifest(clone, outputs)
        if got != expected:
            diff = sorted(set(expected.items()) ^ set(got.items()))[:5]
            raise BenchError(f"{tool.name} pull: workspace differs from what was pushed: {diff}")
        pull.add(secs, b.last_cpu)
    return _RemoteTimes(generate_time, push, noop, pull, stored, noop_run)


# Projects, clones and site caches an earlier run left in WORKDIR (DVC's venv stays).
GENERATED = ("chain-", "multi-", "remote-", "restore-", "scale-", "dvc-site-cache", "settle-probe")
# On ext4 without a journal (this VM's root), a new inode is not taken from those freed in
# the last 60 s, or 360 s while their inode-table block is dirty (fs/ext4/ialloc.c,
# RECENTCY_MIN + RECENTCY_DIRTY): until then every file created in that block group scans
# past them, up to 20x slower. Whichever tool ran next would pay for it, so after deleting
# the bench waits that long. (A probe creating files proved unreliable: its folder may land
# in a block group the deletions did not touch.)
SETTLE_AFTER_DELETE = 370.0


def _clean_earlier_runs(b: Bench) -> None:
    """Delete what earlier runs generated, then wait until the deletions stop mattering,
    so that no sample of either tool creates files right after thousands were deleted."""
    old = [p for p in b.work.iterdir() if p.is_dir() and p.name.startswith(GENERATED)]
    if not old:
        return
    b.log(f"removing {len(old)} folder(s) of earlier runs")
    for path in old:
        _rmtree(path)
    _settle()
    b.log(f"waiting {SETTLE_AFTER_DELETE:.0f} s for ext4 to reuse the freed inodes")
    time.sleep(SETTLE_AFTER_DELETE)


def _check_blobs(summary: re.Pattern[str], out: str, blobs: int, what: str) -> None:
    """Pivot's summary line must count `blobs` blobs moved."""
    m = summary.search(out)
    if not m or int(m.group(1)) != blobs:
        raise BenchError(f"{what} {m and m.group(1)} blobs, expected {blobs}:\n{out}")


def _settle() -> None:
    """Write back what earlier steps left dirty (untimed), so that no sample of either tool
    pays for the writeback of the data the one before it wrote."""
    os.sync()


def _pull_clone(b: Bench, project: str, tool: str, rep: int) -> pathlib.Path:
    return b.work / f"{project}-{tool}-pull{rep + 1}"


def _copy_remote_config(b: Bench, tool: Tool, src: pathlib.Path, clone: pathlib.Path) -> None:
    """The remote settings the source project holds outside git, and for DVC an empty
    site cache of the clone's own."""
    if tool.name == "pivot":
        shutil.copy(src / ".pivot" / "config.yaml", clone / ".pivot" / "config.yaml")
        return
    shutil.copy(src / ".dvc" / "config", clone / ".dvc" / "config")
    site = b.work / "dvc-site-cache" / clone.name
    _rmtree(site)
    b.call(tool, ["config", "--local", "core.site_cache_dir", str(site)], clone)


@section("remote")
def bench_remote(b: Bench) -> list[Row]:
    a = b.args
    note = f"{a.remote_files:,} x {a.remote_file_kb} KB + 4 x {a.remote_big_mb} MB"
    server = b.s3()

    def make(dest: pathlib.Path, tool: str) -> list[str]:
        small, big = generate.generate_remote(
            dest, tool, a.remote_files, a.remote_file_kb, a.remote_big_mb
        )
        return [small, *big]

    data = _DataProject("remote", make, a.remote_files + len(generate.BIG_FILES), 2)
    pvt = _remote_round(b, server, b.with_s3(b.pivot), a.remote_reps, a.remote_reps, data)
    dvt = _remote_round(b, server, b.with_s3(b.dvc), a.dvc_remote_reps, a.dvc_remote_reps, data)
    b.notes["remote: objects / bytes stored per push"] = (
        f"pivot {pvt.stored[0]:,} objects, {pvt.stored[1] / 1e6:.1f} MB; "
        f"dvc {dvt.stored[0]:,} objects, {dvt.stored[1] / 1e6:.1f} MB"
    )
    return [
        Row(
            "remote",
            "`run` / `repro` making the data (info)",
            pvt.generate,
            dvt.generate,
            note=note,
        ),
        Row("remote", "`push` to an empty remote", pvt.push, dvt.push, Target(ratio=1 / 8), note),
        Row("remote", "no-op `push`", pvt.noop, dvt.noop, Target(seconds=0.3), "nothing to send"),
        Row(
            "remote",
            "`pull` into a fresh clone (empty cache and workspace)",
            pvt.pull,
            dvt.pull,
            Target(ratio=1 / 8),
            note,
        ),
    ]


# -- restore -------------------------------------------------------------------------------

PIVOT_RESTORED = re.compile(r"(\d+) ran, (\d+) restored")


def _clone(b: Bench, src: pathlib.Path, dest: pathlib.Path) -> None:
    _rmtree(dest)
    subprocess.run([*GIT, "clone", "-q", str(src), str(dest)], check=True)


# The stage whose code the second restore case changes: in the middle of the 200-stage chain.
CHANGED_PIPELINE, CHANGED_STAGE = 4, 10


def _change_mid_chain(tool: str, clone: pathlib.Path) -> None:
    """Make stage s10 of p4 add 2 instead of 1: a code change for Pivot (the stage's body),
    a command change for DVC (its stages share one script, which takes the step)."""
    folder = clone / f"p{CHANGED_PIPELINE}"
    if tool == "pivot":
        path = folder / "pipeline.py"
        text = path.read_text()
        head, sep, rest = text.partition(f"def s{CHANGED_STAGE}(")
        body = rest.replace("+ 1}", "+ 2}", 1)
        if not sep or body == rest:
            raise BenchError(f"cannot find stage s{CHANGED_STAGE}'s body in {path}")
        path.write_text(head + sep + body)
    else:
        path = folder / "dvc.yaml"
        text = path.read_text()
        marker = f"out_{CHANGED_STAGE}.txt\n"
        if f" out_{CHANGED_STAGE - 1}.txt {marker}" not in text:
            raise BenchError(f"cannot find stage s{CHANGED_STAGE}'s command in {path}")
        path.write_text(text.replace(f" {marker}", f" out_{CHANGED_STAGE}.txt 2\n", 1))


def _restore_clone(b: Bench, tool: str, change: bool, rep: int) -> pathlib.Path:
    return b.work / f"restore-{tool}-clone-{'changed' if change else 'same'}{rep + 1}"


def _restore_once(
    b: Bench, tool: Tool, src: pathlib.Path, final: pathlib.Path, change: bool, rep: int
):
    """One fresh clone restored (and, with `change`, one mid-chain stage edited first):
    Pivot's `run --all` against DVC's `pull` + `repro -P`. Returns (seconds, cpu)."""
    a = b.args
    pipes, stages = a.multi_pipelines, a.multi_stages
    total = pipes * stages
    clone = _restore_clone(b, tool.name, change, rep)
    _clone(b, src, clone)
    clone_final = clone / final.relative_to(src)
    if clone_final.exists():
        raise BenchError(f"{tool.name}: the clone already holds {clone_final}.")
    downstream = (pipes - CHANGED_PIPELINE) * stages - CHANGED_STAGE if change else 0
    if change:
        _change_mid_chain(tool.name, clone)
    _settle()
    if tool.name == "pivot":
        secs, out = b.call(tool, ["run", "--all"], clone)
        cpu = b.last_cpu
        m = PIVOT_RESTORED.search(out)
        want = (downstream, total - downstream)
        if not m or (int(m.group(1)), int(m.group(2))) != want:
            raise BenchError(
                f"pivot run --all in a fresh clone should run {want[0]} and restore "
                f"{want[1]} stages from the remote:\n{out[-2000:]}"
            )
    else:
        site = b.work / "dvc-site-cache" / clone.name
        _rmtree(site)
        b.call(tool, ["config", "--local", "core.site_cache_dir", str(site)], clone)
        pull_secs, _ = b.call(tool, ["pull"], clone)
        pull_cpu = b.last_cpu
        repro_secs, out = b.call(tool, ["repro", "-P"], clone)
        cpu = (pull_cpu[0] + b.last_cpu[0], pull_cpu[1] + b.last_cpu[1])
        if not change and DVC_UP_TO_DATE not in out:
            raise BenchError(f"dvc repro -P after dvc pull ran something:\n{out[-2000:]}")
        ran = out.count("Running stage")
        if change and ran != downstream:
            raise BenchError(f"dvc repro -P ran {ran} stages, expected {downstream}")
        secs = pull_secs + repro_secs
    _check_final(clone_final, total + (1 if change else 0), f"{tool.name} restore clone")
    return secs, cpu


@section("restore")
def bench_restore(b: Bench) -> list[Row]:
    """The multi project (10 x 20 stages) computed and pushed once; then, in a fresh clone
    with an empty cache, Pivot's `run --all` (restoring from the remote) against DVC's
    `pull` followed by `repro -P`; then the same with stage s10 of p4 changed (the 110
    stages from it to the end of the chain run, the 90 before it are restored)."""
    a = b.args
    pipes, stages = a.multi_pipelines, a.multi_stages
    total = pipes * stages
    note = f"{pipes} x {stages} stages, fresh clone"
    server = b.s3()
    pv, dv = b.with_s3(b.pivot), b.with_s3(b.dvc)
    timings: dict[tuple[str, bool], Timing] = {}
    for tool in (pv, dv):
        src = b.work / f"restore-{tool.name}"
        bucket = f"{tool.name}-bench"
        server.create_bucket(bucket)

        def make(dest: pathlib.Path, tool_name: str = tool.name) -> pathlib.Path:
            final = generate.generate_multi(dest, tool_name, pipes, stages)
            if tool_name == "pivot":  # outputs stay out of git, as DVC's .gitignore files do
                (dest / ".gitignore").write_text("out_*.txt\n")
            return final

        b.log(f"restore: {tool.name} project: run, push")
        final = b.fresh_project(src.name, tool.name, make)
        _set_remote(b, tool, src, f"s3://{bucket}/{b.run_id}-restore", server.endpoint, True)
        if tool.name == "pivot":
            _, out = b.call(tool, ["run", "--all"], src)
            _check_ran(out, total, "pivot restore source")
            _, out = b.call(tool, ["push", "--all"], src)
        else:
            b.call(tool, ["repro", "-P"], src)
            _, out = b.call(tool, ["push"], src)
        _check_final(final, total, f"{tool.name} restore source")
        _git(src, "add", "-A")
        _git(src, "commit", "-q", "-m", "ran and pushed")
        reps = a.restore_reps if tool.name == "pivot" else a.dvc_restore_reps
        for change in (False, True):
            timing = timings[tool.name, change] = Timing([])
            what = "one mid-chain stage changed" if change else "nothing changed"
            for i in range(reps):
                b.log(f"restore: {tool.name} in a fresh clone, {what} ({i + 1}/{reps})")
                timing.add(*_restore_once(b, tool, src, final, change, i))
    return [
        Row(
            "restore",
            "`run --all` / `pull` + `repro -P`, empty cache",
            timings["pivot", False],
            timings["dvc", False],
            Target(ratio=1 / 8),
            note,
        ),
        Row(
            "restore",
            f"the same with p{CHANGED_PIPELINE}/s{CHANGED_STAGE}'s code changed",
            timings["pivot", True],
            timings["dvc", True],
            Target(ratio=1 / 8),
            f"{note}; {(pipes - CHANGED_PIPELINE) * stages - CHANGED_STAGE} stages run",
        ),
    ]


# -- scale ---------------------------------------------------------------------------------

# A DVC command still running after this long is killed and its row left empty.
SCALE_DVC_TIMEOUT = 15 * 60.0
# The targets (#16), by total stages and by files in the one directory output.
SCALE_STAGE_TARGETS = {
    200: Target(1 / 20, 0.15),
    1000: Target(seconds=0.2),
    2000: Target(seconds=0.3),
}
SCALE_FILE_TARGETS = {
    100_000: {
        "first": Target(ratio=1 / 5),
        "noop": Target(1 / 15, 0.4),
        "push": Target(seconds=4.0),
        "noop push": Target(seconds=0.3),
        "pull": Target(seconds=6.0),
    }
}


def _interleaved(
    b: Bench, runs: list[tuple[Tool, list[str], pathlib.Path, str]], reps: int
) -> list[Timing | None]:
    """`reps` samples of each (tool, args, cwd, expected output), taken in turn (one of
    each, then again), so a change of load on the shared machine hits every tool alike.
    A DVC command past SCALE_DVC_TIMEOUT gives None."""
    timings: list[Timing | None] = [Timing([]) for _ in runs]
    for _ in range(reps):
        for k, (tool, args, cwd, expect) in enumerate(runs):
            timing = timings[k]
            if timing is None:
                continue
            limit = SCALE_DVC_TIMEOUT if tool.name == "dvc" else None
            try:
                seconds, output = b.call(tool, args, cwd, limit)
            except BenchTimeout as exc:
                b.log(str(exc))
                timings[k] = None
                continue
            if expect not in output:
                raise BenchError(
                    f"`{tool.name} {' '.join(args)}` did not say {expect!r}:\n{output}"
                )
            timing.add(seconds, b.last_cpu)
    return timings


def _scale_stages(b: Bench, pipes: int, stages: int, with_dvc: bool) -> list[Row]:
    """The multi project at `pipes` x `stages`: first runs of each tool (Pivot with `-j 1`,
    so the per-stage cost shows; `--first-runs` of them, each in a fresh project, against
    one of DVC's), then no-op runs of both, interleaved."""
    total = pipes * stages
    name = f"scale-stages{total}"
    note = f"{pipes} x {stages} = {total:,} stages"

    def make(tool: str) -> Callable[[pathlib.Path], pathlib.Path]:
        return lambda dest: generate.generate_multi(dest, tool, pipes, stages)

    pv_first = _first_runs(
        b,
        f"{name}-pivot",
        b.pivot,
        make("pivot"),
        ["run", "--all", "-j", "1"],
        b.args.first_runs,
        total,
    )
    dvc_first = None
    dvc_note = "" if with_dvc else "; DVC skipped (--scale-dvc-max-stages)"
    runs = [(b.pivot, ["run", "--all"], b.work / f"{name}-pivot", PIVOT_UP_TO_DATE)]
    if with_dvc:
        b.log(f"{name}: fresh project, first `dvc repro -P`")
        final = b.fresh_project(f"{name}-dvc", "dvc", make("dvc"))
        _settle()
        try:
            seconds, _ = b.call(b.dvc, ["repro", "-P"], b.work / f"{name}-dvc", SCALE_DVC_TIMEOUT)
            _check_final(final, total, f"dvc {name}")
            dvc_first = Timing([seconds])
            runs.append((b.dvc, ["repro", "-P"], b.work / f"{name}-dvc", DVC_UP_TO_DATE))
        except BenchTimeout as exc:
            b.log(str(exc))
            dvc_note = f"; DVC's first run did not finish in {SCALE_DVC_TIMEOUT / 60:.0f} min"
    b.log(f"{name}: no-op runs, interleaved")
    noops = _interleaved(b, runs, b.reps)
    dvc_noop = noops[1] if len(noops) > 1 else None
    per_stage = pv_first.median / total * 1000
    return [
        Row(
            "scale",
            "first `run --all -j 1` / `repro -P`",
            pv_first,
            dvc_first,
            Target(seconds=0.005 * total),
            f"{note}; Pivot {per_stage:.1f} ms per stage{dvc_note}",
        ),
        Row(
            "scale",
            "no-op `run --all` / `repro -P`",
            noops[0],
            dvc_noop,
            SCALE_STAGE_TARGETS.get(total, Target()),
            note + dvc_note,
        ),
    ]


def _bare_stage(b: Bench, name: str, files: int) -> Timing:
    """The 1 KB files' stage run once by a bare interpreter, no tool around it: the part
    of each tool's first run that is the stage's own (its folder is left for the next
    run's clean-up, as deleting it here would slow the tools' file creation after it)."""
    dest = b.work / f"{name}-bare-{b.run_id}"
    generate.generate_files(dest, "dvc", files)
    bare = Tool("bare", [sys.executable], b.pivot.env)
    b.log(f"{name}: the stage alone, bare")
    _settle()
    seconds, _ = b.call(
        bare, ["data_gen.py", "small", generate.SMALL_DIR, str(files), "1024"], dest
    )
    timing = Timing([])
    timing.add(seconds, b.last_cpu)
    last = dest / generate.SMALL_DIR / f"f{files - 1:05d}.txt"
    if not last.exists() or last.stat().st_size != 1024:
        raise BenchError(f"bare stage: {last} is missing or not 1 KB.")
    return timing


def _scale_files(b: Bench, files: int, with_dvc: bool, dvc_transfers: bool) -> list[Row]:
    """One stage writing `files` files of 1 KB into one directory output: first run,
    no-op runs, push to an empty remote, no-op push, pull into a fresh clone (DVC's push
    and pull only with `dvc_transfers`)."""
    name = f"scale-files{files}"
    note = f"{files:,} x 1 KB, one output"
    targets = SCALE_FILE_TARGETS.get(files, {})
    server = b.s3()

    def make(dest: pathlib.Path, tool: str) -> list[str]:
        return [generate.generate_files(dest, tool, files)]

    data = _DataProject(name, make, files, 1)
    bare = _bare_stage(b, name, files)
    pvt = _remote_round(b, server, b.with_s3(b.pivot), 1, 1, data, b.reps)
    dvt, dvc_note = None, "; DVC skipped (--scale-dvc-max-files)"
    if with_dvc:
        try:
            dvt = _remote_round(
                b, server, b.with_s3(b.dvc), 1, 1, data, b.reps, SCALE_DVC_TIMEOUT, dvc_transfers
            )
            dvc_note = ""
        except BenchTimeout as exc:
            b.log(str(exc))
            dvc_note = f"; a DVC command did not finish in {SCALE_DVC_TIMEOUT / 60:.0f} min"

    def row(metric: str, key: str, attr: str, transfer: bool = False) -> Row:
        dvc = getattr(dvt, attr) if dvt is not None else None
        skipped = ""
        if transfer and dvt is not None and not dvc_transfers:
            skipped = "; DVC skipped (--scale-dvc-max-transfer-files)"
        return Row(
            "scale",
            metric,
            getattr(pvt, attr),
            dvc,
            targets.get(key, Target()),
            note + dvc_note + skipped,
        )

    bare_cpu = statistics.median(bare.cpu)
    bare_note = (
        f"{note}; {bare_cpu:.2f} s CPU; the same stage both tools run, in the Pivot column "
        f"only; a tool's own part is its first run minus this"
    )
    return [
        Row(
            "scale",
            "the stage alone, bare `python data_gen.py small` (no tool)",
            bare,
            None,
            Target(),
            bare_note,
        ),
        row("first `run` / `repro`", "first", "generate"),
        row("no-op `run` / `repro`", "noop", "noop_run"),
        row("`push` to an empty remote", "push", "push", True),
        row("no-op `push`", "noop push", "noop", True),
        row("`pull` into a fresh clone", "pull", "pull", True),
    ]


@section("scale")
def bench_scale(b: Bench) -> list[Row]:
    """Issue #16's sizes: the multi project at 10 x 20, 20 x 50 and 40 x 50 stages, and one
    stage writing 10,000 and 100,000 files of 1 KB (see `--scale-*`)."""
    a = b.args
    rows: list[Row] = []
    for shape in filter(None, a.scale_stages.split(",")):  # "" for none
        pipes, stages = (int(x) for x in shape.lower().split("x"))
        rows += _scale_stages(b, pipes, stages, pipes * stages <= a.scale_dvc_max_stages)
    for count in filter(None, a.scale_files.split(",")):
        files = int(count)
        dvc_transfers = files <= a.scale_dvc_max_transfer_files
        rows += _scale_files(b, files, files <= a.scale_dvc_max_files, dvc_transfers)
    return rows


# Sections run when `--only` is not given (scale is long: ask for it).
DEFAULT_SECTIONS = ("chain", "multi", "remote", "restore")


# -- environment ---------------------------------------------------------------------------


def _first_line(cmd: list[str], env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _script_python(cmd: list[str]) -> str:
    """The version and path of the interpreter that runs `cmd`: the one its script names
    (`#!`), else the one running this script."""
    python = sys.executable
    try:
        with open(cmd[0], "rb") as script:
            first = script.readline().decode(errors="replace").strip()
        if first.startswith("#!") and len(first.split()) == 1:
            python = first[2:]
    except OSError:
        pass
    return f"{_first_line([python, '--version'])} ({python})"


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
        "pivot python": _script_python(b.pivot.cmd),
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
        help=f"comma-separated sections to run (default: {', '.join(DEFAULT_SECTIONS)}; "
        f"also: {', '.join(s for s in SECTIONS if s not in DEFAULT_SECTIONS)})",
    )
    p.add_argument("--reps", type=int, default=5, help="samples per no-op measurement")
    p.add_argument(
        "--first-runs", type=int, default=3, help="fresh first runs timed for Pivot (cheap)"
    )
    p.add_argument("--dvc-first-runs", type=int, default=1, help="fresh first runs for DVC")
    p.add_argument("--chain-stages", type=int, default=200)
    p.add_argument("--multi-pipelines", type=int, default=10)
    p.add_argument("--multi-stages", type=int, default=20)
    p.add_argument("--remote-files", type=int, default=10_000, help="remote: small files")
    p.add_argument("--remote-file-kb", type=int, default=4, help="remote: KB per small file")
    p.add_argument("--remote-big-mb", type=int, default=64, help="remote: MB per big file (4)")
    p.add_argument("--remote-reps", type=int, default=3, help="remote: Pivot push/pull samples")
    p.add_argument("--dvc-remote-reps", type=int, default=2, help="remote: DVC push/pull samples")
    p.add_argument("--restore-reps", type=int, default=3, help="restore: Pivot samples")
    p.add_argument("--dvc-restore-reps", type=int, default=2, help="restore: DVC samples")
    p.add_argument(
        "--scale-stages",
        default="10x20,20x50,40x50",
        help='scale: PIPELINESxSTAGES shapes of the multi project, comma-separated ("" for none)',
    )
    p.add_argument(
        "--scale-files",
        default="10000,100000",
        help='scale: file counts of the one output, comma-separated ("" for none)',
    )
    p.add_argument(
        "--scale-dvc-max-stages",
        type=int,
        default=2000,
        help="scale: skip DVC for projects with more stages than this",
    )
    p.add_argument(
        "--scale-dvc-max-files",
        type=int,
        default=100_000,
        help="scale: skip DVC for outputs with more files than this",
    )
    p.add_argument(
        "--scale-dvc-max-transfer-files",
        type=int,
        default=100_000,
        help="scale: for outputs with more files than this, time DVC's first and no-op "
        "`repro` but skip its push, no-op push and pull (~5 min each at 100,000 files)",
    )
    p.add_argument(
        "--pivot",
        help="command that runs pivot (default: bench/work/pivot-venv's, else beside python)",
    )
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
    _clean_earlier_runs(b)
    env = environment(b)
    rows: list[Row] = []
    try:
        for name in chosen or DEFAULT_SECTIONS:
            rows += SECTIONS[name](b)
    finally:
        b.close()
    env["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    env.update(b.notes)
    print()
    print(markdown_table(rows))
    print()
    cpu = cpu_table(rows)
    if cpu:
        print("CPU seconds (user + sys), medians:")
        print()
        print(cpu)
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
