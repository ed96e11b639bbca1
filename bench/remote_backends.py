"""`pivot push` and `pivot pull` of the remote benchmark's data on every fsspec backend,
each against a real server on 127.0.0.1 (the test suite's servers: tests/fsspec_servers.py).

    .venv/bin/python bench/remote_backends.py [--files 10000 --big-mb 64] [--only ftp,sftp]

The data is `bench/generate.py remote` with run_bench.py's sizes by default (a directory
of small text files and four large files, half random and half text), run once with
`pivot run`. For each backend: the remote
is configured through the CLI (options as `pivot remote modify`, secrets with --local),
`pivot push` into an empty folder is timed, then `pivot pull` into a fresh copy of the
project (lock files and config only: empty cache and workspace). Each timing is the wall
clock of one `pivot` subprocess; the servers run in this process's threads (Azurite as a
node process), so they share the machine with Pivot, as loopback servers do.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

import fsspec_servers as servers  # noqa: E402  (the test suite's loopback servers)

BACKENDS = ("local", "ftp", "sftp", "webdav", "gcs", "azure")


def pivot(cwd: pathlib.Path, *args: str) -> float:
    """Run `pivot ARGS` in `cwd` (this tree first on the path); its wall time."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pivot", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pivot {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


@contextlib.contextmanager
def server(name: str, work: pathlib.Path):
    """The Server of backend `name` (a local folder as a baseline)."""
    folder = work / f"{name}-data"
    folder.mkdir()
    if name == "local":
        yield servers.Server("file", str(folder))
        return
    runner = {
        "ftp": lambda: servers.run_ftp(folder),
        "sftp": lambda: servers.run_sftp(folder),
        "webdav": lambda: servers.run_webdav(folder),
        "gcs": servers.run_gcs,
        "azure": lambda: servers.run_azurite(folder),
    }[name]
    with runner() as running:
        yield running


def copy_project(src: pathlib.Path, dest: pathlib.Path) -> None:
    """What a clone has: the pipeline files, lock files and config; no cache, no outputs."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = pathlib.Path(folder)
        if here == src:
            return {"data"} & set(names)
        if here.name == ".pivot":
            return {n for n in names if n == "cache" or n.startswith("state.db")}
        return set()

    shutil.copytree(src, dest, ignore=ignore)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10000, help="small files (4 KB each)")
    parser.add_argument("--big-mb", type=int, default=64, help="size of each large file")
    parser.add_argument("--only", default=",".join(BACKENDS))
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="pivot-backends-", dir=args.workdir))
    try:
        src = work / "src"
        subprocess.run(
            [
                sys.executable,
                str(HERE / "generate.py"),
                "remote",
                str(src),
                "--tool",
                "pivot",
                "--files",
                str(args.files),
                "--big-mb",
                str(args.big_mb),
            ],
            check=True,
        )
        pivot(src, "init")
        pivot(src, "run")
        size = sum(
            p.stat().st_size for p in src.rglob("*") if p.is_file() and ".pivot" not in p.parts
        )
        print(f"data: {args.files} x 4 KB + 4 x {args.big_mb} MB, {size / 1e6:.0f} MB in all")
        print("| backend | push | pull |\n| --- | --- | --- |")
        for name in args.only.split(","):
            with server(name, work) as running:
                project = work / f"{name}-src"
                shutil.copytree(src, project)
                pivot(project, "remote", "add", "--local", "--default", "bench", running.url())
                for key, value in running.options.items():
                    pivot(project, "remote", "modify", "--local", "bench", key, str(value))
                pushed = pivot(project, "push", "--all")
                clone = work / f"{name}-clone"
                copy_project(project, clone)
                pulled = pivot(clone, "pull", "--all")
                print(f"| {name} | {pushed:.1f} s | {pulled:.1f} s |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
