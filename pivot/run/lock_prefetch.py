"""Reading and validating a project's lock files in a helper process, while this process
loads the pipelines.

A run of many stages reads and validates every lock file of the loaded pipelines (their
paths and hashes are untrusted), Python work per stage on the command's path. `start`
starts a `python -I -S` helper on the other core that lists the lock files and reads each
one with `lockfile.read_validated`, writing the decoded JSON of the locks that passed,
with the stat key of the file it read, in chunks to a file in memory. `finish` never
waits: it stops the helper if it still runs and hands the complete chunks to
`lockfile.remember`; every lock file the helper did not get to, could not read or refused
is read here as before (and reported here if unusable).

A lock from the helper is used as `read_lock`'s memo is: only while its file's size, mtime,
ctime and inode are those the helper read (one `stat` at use, after the command took the
project's lock), and never for a file changed too recently: the helper judges that against
its own marker file in the project's tmp folder, made before its first read
(`lockfile.use_marker`), or by the 3 s rule without one. What the helper hands
over is untrusted like the file itself: `read_lock` validates it at use with
`lockfile.lock_from_json`, the validator of every lock file read (the helper saves this
process the file's reading and JSON decoding), and reads the file itself when it does not
validate.
"""

from __future__ import annotations

import logging
import marshal
import os
import struct
import sys
from typing import IO, TYPE_CHECKING

from pivot._helper_procs import memory_file, usable_cores
from pivot.cache import prestat
from pivot.run import lock_memo, lockfile

if TYPE_CHECKING:
    import pathlib
    import subprocess

    from pivot.project import Project

log = logging.getLogger(__name__)

# Below about this many lock files the helper is not worth starting: it costs this
# process 5-10 ms (finding the project, starting it, taking its rows) and the other core
# 60-80 ms (an interpreter and the validator's imports before the first file), while
# reading and validating a lock file here costs 30-50 us. At 1,000 lock files it saved
# this process about 20 ms of CPU and left the wall clock no better, or worse when the
# other core was not idle (docs/benchmarks.md).
HELPER_MIN = 1_500
CHUNK = 64  # locks per chunk the helper writes
_LENGTH = struct.Struct("<I")  # a chunk: its length, then the marshal bytes of its rows
# The helper: reads (sys.path, the stages folder, the tmp folder or None) from stdin,
# writes chunks to stdout.
_HELPER = """\
import marshal, sys
path, stages_dir, tmp_dir = marshal.load(sys.stdin.buffer)
sys.path[:0] = path
from pivot.run.lock_prefetch import serve
serve(stages_dir, sys.stdout.buffer, tmp_dir)
"""


class Prefetch:
    """A helper process reading lock files into `out`; `finish` takes what it read."""

    def __init__(self, proc: subprocess.Popen[bytes], out: IO[bytes]) -> None:
        self._proc = proc
        self._out = out

    def finish(self) -> int:
        """Stop the helper if it still runs and keep the locks it validated for
        `read_lock`; how many."""
        self._stop()
        with self._out:
            self._out.seek(0)
            data = self._out.read()
        found = []
        at = 0
        try:
            while at + _LENGTH.size <= len(data):
                (size,) = _LENGTH.unpack_from(data, at)
                at += _LENGTH.size
                if at + size > len(data):
                    break  # the chunk the helper was writing when it was stopped
                found += marshal.loads(data[at : at + size])
                at += size
            lockfile.remember(found)
        except Exception as exc:  # marshal raises EOFError, ValueError, SystemError...
            log.debug(f"The lock file helper's output is unusable: {exc!r}")
            lockfile.remember(())
            return 0
        return len(found)

    def cancel(self) -> None:
        """Stop the helper if it still runs, and drop what it read."""
        self._stop()
        self._out.close()

    def _stop(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# The helper `start_early` started, with the stages folder it reads, until `take`n.
_EARLY: dict[str, Prefetch] = {}


def start_early(argv: list[str]) -> None:
    """Start the helper for the project around the current directory, before `pivot run`
    imports its modules (`take` hands it to the run), if `argv` is the command line of a
    run (`prestat.runs_stages`: not `pivot run --help`, nor a shell completion)."""
    import atexit
    import pathlib

    from pivot.project import Project, find_root

    if not prestat.runs_stages(argv):
        return

    root = find_root(pathlib.Path.cwd().resolve())
    if root is None:
        return
    project = Project(root)
    prefetch = start(project.stages_dir, memo_dir=_memo_dir(project))
    if prefetch is not None:
        _EARLY[str(project.stages_dir)] = prefetch
        atexit.register(prefetch.cancel)


def take(project: Project) -> Prefetch | None:
    """The helper reading `project`'s lock files: the one `start_early` started, else a
    new one."""
    early = _EARLY.pop(str(project.stages_dir), None)
    for other in _EARLY.values():  # the run's project is not the one around the cwd
        other.cancel()
    _EARLY.clear()
    return early if early is not None else start(project.stages_dir, memo_dir=_memo_dir(project))


def _memo_dir(project: Project) -> pathlib.Path | None:
    """Where `project`'s lock memo would be (None when its tmp folder cannot be made)."""
    try:
        return project.tmp_dir
    except OSError:
        return None


def start(
    stages_dir: pathlib.Path, helper_min: int = HELPER_MIN, memo_dir: pathlib.Path | None = None
) -> Prefetch | None:
    """A helper reading the lock files under `stages_dir`, or None when there are fewer
    than about `helper_min` of them, one core, no interpreter to start, or a memo of the
    decoded lock files in `memo_dir` (`run.lock_memo`: it saves the reading as the helper
    does, in this process and without a second core). The helper makes its racy marker
    (`lockfile.use_marker`) in `memo_dir`, the project's tmp folder."""
    if (
        not sys.executable
        or usable_cores() < 2
        or (memo_dir is not None and lock_memo.exists(memo_dir))
        or _about(str(stages_dir)) < helper_min
    ):
        return None
    import subprocess

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tmp_dir = None if memo_dir is None else str(memo_dir)
    request = marshal.dumps(([here, *sys.path], str(stages_dir), tmp_dir))
    out = memory_file(b"")
    try:
        with memory_file(request) as request_in:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER],
                stdin=request_in,
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
    except OSError as exc:
        out.close()
        log.debug(f"No lock file helper: {exc}")
        return None
    return Prefetch(proc, out)


def _about(stages_dir: str) -> int:
    """About how many lock files `stages_dir` holds, in a few system calls: the entries of
    each pipeline's folder (a folder of nested pipelines counts as one)."""
    try:
        with os.scandir(stages_dir) as listing:
            folders = [entry.path for entry in listing if entry.is_dir(follow_symlinks=False)]
        return sum(len(os.listdir(folder)) for folder in folders)
    except OSError:
        return 0


def serve(stages_dir: str, out: IO[bytes], tmp_dir: str | None = None) -> None:
    """The helper's work: each lock file under `stages_dir` that reads and validates, as
    the rows `lockfile.remember` takes (name, stat key, decoded JSON), written to `out` in
    chunks of `CHUNK` (files that fail are left out: this process reads and reports
    them). A file changed too recently is left out too, judged against a marker in
    `tmp_dir` (`lockfile.use_marker`) or, without one, by the 3 s rule."""
    if tmp_dir is not None:
        lockfile.use_marker(stages_dir, tmp_dir)
    rows = []
    for stage_id in lockfile.all_locks(stages_dir):
        name = os.path.join(stages_dir, f"{stage_id}.lock")
        try:
            key, raw, _ = lockfile.read_validated(name)
        except Exception:  # read and reported by the command itself
            continue
        if key is None:  # changed too recently to be memoised
            continue
        rows.append((name, key, raw))
        if len(rows) == CHUNK:
            _write_chunk(out, rows)
            rows = []
    _write_chunk(out, rows)


def _write_chunk(out: IO[bytes], rows: list[tuple]) -> None:
    if rows:
        data = marshal.dumps(rows)
        out.write(_LENGTH.pack(len(data)) + data)
        out.flush()
