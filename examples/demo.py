"""The README's first command: the example project end to end on a local-directory remote.

Machine A runs the parent/child project of the multi-pipeline guide from its `analysis/`
directory, pushes the cache to a remote that is just a directory, and commits its lock
files. Machine B is a fresh `git clone` with an empty cache: its `pivot run` restores both
stages from the remote instead of running them. No cloud account needed.

Usage: python examples/demo.py [WORKDIR]   (default: a new temporary directory)
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

EXAMPLE = pathlib.Path(__file__).resolve().parent / "my_project"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Pivot demo",
    "GIT_AUTHOR_EMAIL": "demo@example.invalid",
    "GIT_COMMITTER_NAME": "Pivot demo",
    "GIT_COMMITTER_EMAIL": "demo@example.invalid",
}


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def sh(*args: str, cwd: pathlib.Path, shown: str | None = None) -> None:
    """Run a command, echoing it as a user would type it; stop the demo if it fails."""
    print(f"$ {shown or ' '.join(args)}", flush=True)
    subprocess.run(args, cwd=cwd, check=True, env={**os.environ, **GIT_ENV})


def pivot(*args: str, cwd: pathlib.Path) -> None:
    sh(sys.executable, "-m", "pivot", *args, cwd=cwd, shown=" ".join(("pivot", *args)))


def main() -> int:
    work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pivot-"))
    work.mkdir(parents=True, exist_ok=True)
    machine_a, machine_b, remote = work / "machine-a", work / "machine-b", work / "remote"
    for path in (machine_a, machine_b, remote):
        if path.exists():
            shutil.rmtree(path)
    shutil.copytree(EXAMPLE, machine_a)

    step("Machine A: initialise, add a local-directory remote, run from analysis/")
    sh("git", "init", "-q", cwd=machine_a)
    pivot("init", cwd=machine_a)
    pivot("remote", "add", "local", str(remote), "--default", cwd=machine_a)
    pivot("run", cwd=machine_a / "analysis")
    pivot("run", cwd=machine_a / "analysis")

    step("Machine A: push the cache, commit code and lock files")
    pivot("push", cwd=machine_a / "analysis")
    sh("git", "add", "-A", cwd=machine_a)
    sh("git", "commit", "-qm", "Run the example pipelines", cwd=machine_a)

    step("Machine B: a fresh clone with an empty cache restores instead of running")
    sh("git", "clone", "-q", str(machine_a), str(machine_b), cwd=work)
    pivot("run", cwd=machine_b / "analysis")
    pivot("verify", cwd=machine_b / "analysis")

    report = (machine_b / "analysis" / "report.txt").read_text()
    same = report == (machine_a / "analysis" / "report.txt").read_text()
    print(f"\nmachine-b/analysis/report.txt: {report.strip()!r} (identical to A: {same})")
    print(f"Everything is under {work}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
