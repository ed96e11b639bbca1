"""Test helpers: run the real CLI, write project files, read execution logs."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


class PivotCLI:
    """Runs `python -m pivot` as a user would, in a given directory."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def __call__(
        self, *args: str, cwd: pathlib.Path | str | None = None, rc: int | None = 0, **env: str
    ) -> subprocess.CompletedProcess:
        where = self.root / cwd if cwd is not None else self.root
        proc = subprocess.run(
            [sys.executable, "-m", "pivot", *args],
            cwd=where,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
            timeout=120,
        )
        if rc is not None and proc.returncode != rc:
            raise AssertionError(
                f"pivot {' '.join(args)} exited {proc.returncode}, expected {rc}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc


def start_pivot(
    cwd: pathlib.Path, *args: str, output: int = subprocess.PIPE, own_group: bool = False
) -> subprocess.Popen:
    """`python -m pivot ARGS` started in `cwd` and left running (for tests that act while
    it runs): its output captured as text unless `output` is DEVNULL, in a process group of
    its own when `own_group` (so that killing the group kills its workers too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pivot", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=output,
        stderr=output,
        text=True,
        start_new_session=own_group,
    )


def start_pivot_group(cwd: pathlib.Path, *args: str) -> subprocess.Popen:
    """`start_pivot` in a process group of its own, its output discarded: for tests that
    kill it at some point (`kill_when`)."""
    return start_pivot(cwd, *args, output=subprocess.DEVNULL, own_group=True)


def kill_when(proc: subprocess.Popen, ready) -> bool:
    """kill -9 the process group of `proc` as soon as `ready()` holds; False if it
    finished first."""
    try:
        while proc.poll() is None:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                return True
            time.sleep(0.0005)
        return False
    finally:
        proc.wait()


def write_files(root: pathlib.Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def rewrite_keeping_mtime(path: pathlib.Path, data: str | bytes) -> os.stat_result:
    """Overwrite the start of `path` in place with `data` (same inode; the caller keeps the
    size) and put its mtime back: a change only ctime can reveal. Returns the new stat."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    return after


def executions(root: pathlib.Path) -> list[str]:
    """Stage names in the order the test stages recorded running (see COUNTER)."""
    log = root / "executions.log"
    return log.read_text().split() if log.exists() else []


def word_pipeline(word: str = "one", times: int = 100) -> str:
    """The text of a pipeline `p` of one stage `make` writing `word` `times` times to
    out.txt (from `    return WORD...`): another word is other code and another output."""
    repeat = f" * {times}" if times != 1 else ""
    return f"""
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")

WORD = "{word}"


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return WORD{repeat}


pipeline.register(make)
"""


COUNTER = """
def _count(name):
    import pathlib
    root = pathlib.Path(__file__).resolve().parent
    while not (root / ".pivot").is_dir():
        root = root.parent
    with open(root / "executions.log", "a") as log:
        log.write(name + "\\n")
"""

# A pipeline `p` of two counted stages, `first` writing first.txt and `second` reading it.
TWO_STAGES = (
    """
from typing import Annotated

import pivot
"""
    + COUNTER
    + """
pipeline = pivot.Pipeline("p")


def first() -> Annotated[str, pivot.Out("first.txt", pivot.loaders.Text())]:
    _count("first")
    return "1"


def second(
    x: Annotated[str, pivot.Dep("first.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("second.txt", pivot.loaders.Text())]:
    _count("second")
    return x + "2"


pipeline.register(first)
pipeline.register(second)
"""
)


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1 (held open together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def declare_stage(root: pathlib.Path, stage_id: str, outs: list[str]) -> None:
    """Write the `pipeline.py` at `root` that declares stage `stage_id` (`p/<name>`) with
    the outputs `outs` (project paths), as the commit holding its lock file would: only
    lock files of declared stages with exactly those outputs are pulled or pushed. The
    stage never runs in these tests (its lock file is written by the test)."""
    pipeline, name = stage_id.split("/")
    fields = ", ".join(
        f"'o{i}': Annotated[pathlib.Path, pivot.Out({out!r}, pivot.loaders.PathOnly())]"
        for i, out in enumerate(outs)
    )
    source = f"""
        import pathlib
        from typing import Annotated, TypedDict

        import pivot

        pipeline = pivot.Pipeline({pipeline!r})
        Outs = TypedDict("Outs", {{{fields}}})

        def {name}() -> Outs:
            raise RuntimeError("declared only")

        pipeline.register({name})
    """
    write_files(root, {"pipeline.py": source})


HEAVY = (
    "s3fs",
    "boto3",
    "botocore",
    "aiobotocore",
    "pandas",
    "rich",
    "tqdm",
    "fsspec",
    "yaml",
    "watchfiles",
    "vl_convert",
    "dask",
    "distributed",
)
PROBE = """
import json, sys
sys.argv = ["pivot", *{args!r}]
from pivot.cli.entry import main
try:
    main()
finally:
    print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)), file=sys.stderr)
"""


def loaded_modules(
    cwd, names: tuple[str, ...], *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`pivot ARGS` run in `cwd` as the program runs it, and which of the modules `names`
    it loaded."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args), names=tuple(names))],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        check=False,
    )
    return proc, json.loads(proc.stderr.strip().splitlines()[-1])


def imported_heavy_modules(cwd, *args: str) -> list[str]:
    """The heavy modules (HEAVY) that `pivot ARGS` imports when run in `cwd`."""
    return loaded_modules(cwd, HEAVY, *args)[1]


def verdict_memo_key(project: pathlib.Path) -> tuple[int, int] | None:
    """The verdict memo file's inode and mtime (None: absent): the same after a command
    when that command was replayed from it."""
    from pivot.run import verdict_memo

    try:
        st = (project / ".pivot" / "tmp" / verdict_memo.NAME).stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def add_blob(cache, data: bytes) -> str:
    """Store `data` in the LocalCache `cache` as one blob; returns its hash."""
    with cache.batch() as batch:
        return batch.put_bytes(data)


def git(root: pathlib.Path, *args: str) -> str:
    """Run git in `root` as a fixed committer; returns its stdout."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet collected by its parent, does not)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
