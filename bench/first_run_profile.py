"""Where the CPU of a first `pivot run --all -j 1` goes, per executed stage: by process
(the coordinator, its worker, the stages' children), user against kernel time, and the
kernel's time by cause (fork, copy-on-write faults, creating files, fsync, ...).

    .venv/bin/python bench/first_run_profile.py --shape 10x20 --reps 2 [TREE]

Each sample runs in a freshly generated multi project (as `first_runs.py`) under
`perf record -g` (CPU samples at --freq Hz, with kernel call chains); with --faults, a
second fresh run records every minor page fault instead (`minor-faults`, period 1: a
sample per fault slows the faults down, so the two are not recorded together). Needs
`perf` with access to kernel symbols (`kernel.perf_event_paranoid` <= 1, or root). The
coordinator's samples before the first stage child's first sample and after the last
one's are its start-up (imports, loading the pipelines, planning) and end, reported
apart; everything else is divided by the number of stages.

`--floor` measures instead what a fork costs that runs nothing: a process that imported
Pivot's run path forks and the child exits at once (`os._exit`), timed with `getrusage`,
once through `os.fork` (CPython's at-fork handlers run in the child: `threading`, `random`,
`logging`, ...) and once through libc's `fork` called directly (`ctypes.PyDLL`, the GIL
held; safe here only because the child runs no Python beyond `os._exit`): the difference
is the interpreter's share of a fork, the rest is the kernel's.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import first_runs

# Kernel causes, looked up in a sample's call chain in this order (first match wins).
CAUSES = (
    ("do_exit", "process exit"),
    ("exc_page_fault", "page faults (copy-on-write, new pages)"),
    ("dup_mmap", "fork: copying page tables"),
    ("kernel_clone", "fork: other"),
    ("ret_from_fork", "fork: other"),
    ("fsync", "fsync"),
    ("do_sys_openat2", "open, create files"),
    ("do_mkdirat", "mkdir"),
    ("do_renameat2", "rename"),
    ("do_unlinkat", "unlink"),
    ("ksys_read", "read"),
    ("ksys_write", "write"),
    ("getdents", "list folders"),
    ("statx", "stat"),
    ("newfstatat", "stat"),
    ("futex", "futex (threads waking threads)"),
    ("wait4", "wait for a child"),
    ("schedule", "scheduling"),
)


def _cause(frames: list[str]) -> str:
    for key, name in CAUSES:
        if any(key in frame for frame in frames):
            return name
    return "other"


def record(
    tree: str, pipes: int, stages: int, base: pathlib.Path, events: list[str]
) -> pathlib.Path:
    """perf data of one first run in a fresh project (the caller deletes its folder)."""
    dest = pathlib.Path(tempfile.mkdtemp(prefix="first-run-profile-", dir=base))
    first_runs._fresh(dest / "project", tree, pipes, stages)
    data = dest / "perf.data"
    command = [sys.executable, "-m", "pivot", "run", "--all", "-j", "1"]
    done = subprocess.run(
        ["perf", "record", "-q", *events, "-o", str(data), "--", *command],
        cwd=dest / "project",
        env={**os.environ, "PYTHONPATH": tree},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"perf record of pivot run failed:\n{done.stderr[-2000:]}")
    return data


def _samples(data: pathlib.Path) -> list[tuple[str, int, int, float, list[tuple[str, bool]]]]:
    """(event, pid, tid, time, call chain as (symbol, in the kernel)) per sample."""
    text = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "event,pid,tid,time,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    samples = []
    head: tuple[str, int, int, float] | None = None
    frames: list[tuple[str, bool]] = []
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if head is not None:
                samples.append((*head, frames))
            head, frames = None, []
        elif not line.startswith("\t"):  # a sample's first line (a fault's only line)
            if head is not None:
                samples.append((*head, frames))
                frames = []
            ids, stamp, event = line.split()[:3]
            pid, tid = ids.split("/")
            head = (event.rstrip(":"), int(pid), int(tid), float(stamp.rstrip(":")))
        else:
            parts = line.split()
            frames.append((parts[1] if len(parts) > 1 else "?", "kernel.kallsyms" in line))
    return samples


def _by_role(data: pathlib.Path) -> list[tuple[str, str, list[tuple[str, bool]]]]:
    """(process role, event, call chain) per sample of one run."""
    samples = _samples(data)
    coordinator = samples[0][1]
    counts = collections.Counter(pid for _, pid, _, _, _ in samples if pid != coordinator)
    worker = counts.most_common(1)[0][0]
    times = [t for _, pid, _, t, _ in samples if pid not in (coordinator, worker)]
    first, last = min(times), max(times)
    roled = []
    for event, pid, tid, stamp, frames in samples:
        if pid == coordinator:
            if stamp < first or stamp > last:
                role = "coordinator: start-up and end"
            else:
                role = "coordinator: main thread" if tid == pid else "coordinator: its threads"
        else:
            role = "worker" if pid == worker else "stage children"
        roled.append((role, event, frames))
    return roled


def breakdown(data: pathlib.Path, faulted: pathlib.Path | None, stages: int, freq: int) -> str:
    """The report of one sample: ms of CPU (and faults) per stage, by process and cause."""
    cpu: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    faults: collections.Counter[str] = collections.Counter()
    for role, _, frames in _by_role(data):
        if frames and frames[0][1]:
            cpu[role]["kernel: " + _cause([name for name, _ in frames])] += 1
        else:
            cpu[role]["user (Python and libraries)"] += 1
    for role, _, _ in _by_role(faulted) if faulted is not None else []:
        faults[role] += 1
    per_stage = 1000 / freq / stages
    total = sum(sum(c.values()) for c in cpu.values())
    lines = [
        f"{total / freq:.2f} s of CPU, {total * per_stage:.2f} ms and "
        f"{sum(faults.values()) / stages:.0f} minor faults per stage ({stages} stages)"
    ]
    for role, causes in sorted(cpu.items(), key=lambda item: -sum(item[1].values())):
        n = sum(causes.values())
        kernel = sum(v for k, v in causes.items() if k.startswith("kernel"))
        lines.append(
            f"  {role:32s} {n * per_stage:5.2f} ms/stage (kernel {kernel * per_stage:.2f}),"
            f" {faults[role] / stages:.0f} faults/stage"
        )
        for name, count in causes.most_common(8):
            lines.append(f"      {name:46s} {count * per_stage:5.2f}")
    return "\n".join(lines)


def fork_floor(forks: int) -> str:
    """CPU and minor faults per fork + exit of a child that runs nothing (see `--floor`)."""
    import ctypes
    import resource

    import pivot.cli.main
    import pivot.run.local
    import pivot.run.scheduler
    import pivot.services.stages  # noqa: F401 (what the coordinator holds when it forks)

    status = pathlib.Path("/proc/self/status").read_text().splitlines()
    anon = next(line.split()[1] for line in status if line.startswith("RssAnon"))
    lines = [f"fork + exit from a process holding {int(anon) / 1024:.1f} MB anonymous memory:"]
    for name, fork in (("os.fork", os.fork), ("libc fork", ctypes.PyDLL(None).fork)):
        me, children = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN
        before = (resource.getrusage(me), resource.getrusage(children))
        for _ in range(forks):
            pid = fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        after = (resource.getrusage(me), resource.getrusage(children))
        cpu = [
            (b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime) * 1000 / forks
            for a, b in zip(before, after, strict=True)
        ]
        faults = [(b.ru_minflt - a.ru_minflt) / forks for a, b in zip(before, after, strict=True)]
        lines.append(
            f"  {name:10s} parent {cpu[0]:.2f} ms ({faults[0]:.0f} faults),"
            f" child {cpu[1]:.2f} ms ({faults[1]:.0f} faults)"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tree", nargs="?", default=".", help="Pivot source tree (default: .)")
    p.add_argument("--shape", default="10x20", help="PIPELINESxSTAGES of the multi project")
    p.add_argument("--reps", type=int, default=1, help="samples")
    p.add_argument("--freq", type=int, default=2000, help="CPU samples per second")
    p.add_argument("--faults", action="store_true", help="also count faults (a second run)")
    p.add_argument("--floor", action="store_true", help="only the cost of a bare fork")
    p.add_argument("--workdir", default=str(pathlib.Path(__file__).parent / "work"))
    a = p.parse_args()
    pipes, stages = (int(n) for n in a.shape.split("x"))
    base = pathlib.Path(a.workdir)
    base.mkdir(parents=True, exist_ok=True)
    tree = str(pathlib.Path(a.tree).resolve())
    if a.floor:
        sys.path.insert(0, tree)
        for _ in range(a.reps):
            print(fork_floor(400), f"\n  load {os.getloadavg()[0]:.1f}", flush=True)
        return
    for _ in range(a.reps):
        data = record(tree, pipes, stages, base, ["-g", "-e", f"task-clock/freq={a.freq}/"])
        faulted = (
            record(tree, pipes, stages, base, ["-e", "minor-faults/period=1/"])
            if a.faults
            else None
        )
        try:
            report = breakdown(data, faulted, pipes * stages, a.freq)
            print(report, f"\n  load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            for path in (data, faulted):
                if path is not None:
                    shutil.rmtree(path.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
