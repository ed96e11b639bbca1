"""One stage on a cluster worker: code and deps fetched from the remote into the
worker's persistent cache, laid out in a scratch project, the stage run there in a fresh
process (`run/stage_process.py`), its outputs pushed to the remote behind the task (the
task returns once they are in the worker's cache; the coordinator waits for the push's
confirmation before it records the stage).

Runs inside a Dask worker process, but imports no Dask: the executor hands `run_task` a
`Task`, an `announce` callable (the push's end, told to the coordinator) and a
`cancelled` callable. The worker's folder is `$PIVOT_WORKER_DIR`, else
`.pivot-worker` in the worker's working directory: `home/` (a Pivot project whose cache
and state db persist across tasks: blobs already there are not fetched again) and
`scratch/` (one folder per stage server: a fresh scratch project for each task, laid out
while the task before ended and removed behind its task).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pivot.errors import PivotError
from pivot.run.executor import Outcome

OUTPUT_TAIL = 4000  # characters of the stage's output sent back
UNLISTED_PUSH = 8 << 20  # outputs up to this size are pushed without listing the remote
MAX_LOCATIONS = 10_000  # blobs of one output whose locations go back to the coordinator
CANCEL_POLL = 0.5  # seconds between checks for a cancelled run
SERVER_CHECK_TIMEOUT = 10.0  # seconds a stage server has to say it may serve a new run
PUSH_THREADS = 4  # pushes a worker process makes at once, behind its tasks
_ASIDE = ".removing-"  # in the name of a scratch project being deleted behind its task


@dataclass(frozen=True)
class Task:
    """What a worker needs to run one stage; holds no secret (the worker's own
    environment supplies the remote's credentials)."""

    stage_id: str
    source: str  # the stage's pipeline file, project-relative
    bundle: str  # tree hash of the code bundle
    deps: dict[str, tuple[str, str]]  # project path -> (hash, kind)
    fingerprint: dict[str, str]
    run_key: str
    project_root: str  # the coordinator's, named in messages instead of the scratch folder
    run_id: str  # the coordinator's run: a worker imports each pipeline file once per run
    remote_url: str
    remote_name: str | None
    remote_options: dict[str, Any] = field(default_factory=dict)
    # Where blobs of the bundle and deps lie on the remote (hash -> PackedBlob), as far
    # as the coordinator knows: the worker reads them without listing the remote.
    locations: dict[str, Any] = field(default_factory=dict)
    # A task submitted before its upstreams finished (`chained`): the deps whose hashes
    # the upstreams' outcomes give, what its run key hashes besides the deps
    # (`plan.run_key_body`), and the run keys it must not run under (its lock's: the
    # coordinator skips the stage then).
    pending: tuple[str, ...] = ()
    key_body: dict[str, Any] | None = None
    avoid: frozenset[str] = frozenset()
    # Whether the coordinator waits for the worker's word on the push (`pushes.PushWaits`):
    # only then may the task return before it. A task pickled by a coordinator that does
    # not wait lacks the field and reads False: its outputs are pushed before it returns.
    push_behind: bool = False


def chained(task: Task, upstreams: list[Outcome]) -> Task | None:
    """The task completed with what its upstreams produced: their output hashes and
    where the blobs lie, and its run key; None when it must not run here (an upstream
    failed, or its run key is one to avoid): the coordinator then decides it."""
    from pivot.run.plan import run_key_of

    if not all(outcome.ok for outcome in upstreams):
        return None
    produced = {path: out for outcome in upstreams for path, out in outcome.outs.items()}
    if any(path not in produced for path in task.pending):
        return None
    deps = dict(task.deps)
    locations = dict(task.locations)
    for path in task.pending:
        deps[path] = (produced[path]["hash"], produced[path]["kind"])
    for outcome in upstreams:
        for where in outcome.locations.values():
            locations.update(where)
    assert task.key_body is not None
    key = run_key_of(task.key_body, {path: digest for path, (digest, _) in deps.items()})
    if key in task.avoid:
        return None
    return replace(task, deps=deps, locations=locations, run_key=key, pending=(), key_body=None)


def worker_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PIVOT_WORKER_DIR") or ".pivot-worker").resolve()


def _home(base: pathlib.Path):
    """The worker's persistent project (its cache, run records and the remote's index
    cache), created on first use, and kept by the worker process while its `.pivot` and
    cache folders are the ones it saw (`_home_stamp`): nothing else of it is read here
    (no config: the task names the remote). Once either folder is removed or replaced
    (the worker's folder cleaned to free space), the project is made again and what this
    process kept of the old one is forgotten: its open state db, and which code bundles
    its cache held whole."""
    from pivot.project import Project, init_project

    kept = _HOMES.get(base)
    if kept is not None and _home_stamp(kept[1]) == kept[0]:
        return kept[2]
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    init_project(home)
    project = Project(home)
    project.cache_dir.mkdir(exist_ok=True)  # stamped from the start
    folders = (str(project.pivot_dir), str(project.cache_dir))
    with _REMOTES_LOCK:
        if kept is not None:
            _WORKSPACES.pop(home, None)
            cache = str(project.cache_dir)
            _BUNDLES.difference_update([b for b in _BUNDLES if b[0] == cache])
        _HOMES[base] = (_home_stamp(folders), folders, project)
    return project


def _home_stamp(folders: tuple[str, ...]) -> tuple[tuple[int, int] | None, ...]:
    """(device, inode) of each of `folders`; None for one absent."""
    stamps = []
    for folder in folders:
        try:
            st = os.stat(folder)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_dev, st.st_ino))
    return tuple(stamps)


def run_task(
    task: Task,
    announce: Callable[[dict[str, Any]], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Fetch, lay out and run one stage; a failure is a failed `Outcome` naming this
    worker (never an exception: those are left to the executor for Pivot's own bugs).

    A stage that ran returns at once with `pushing` set (for a task with `push_behind`):
    its outputs are in this worker's cache, and a stage downstream may run here on them
    while they are pushed in the background. `announce` then gets what the coordinator
    waits for before it records the stage (`pushed`): the output hashes and where their
    blobs lie, or the push's error. Otherwise the outputs are pushed before it returns."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    base = worker_dir()
    started = time.time()
    start = time.perf_counter()
    try:
        home = _home(base)
        opened = _open_remote(task.remote_url, task.remote_name, task.remote_options, home.root)
        times = {"open": time.perf_counter() - start}  # a fresh worker waits for `warm` here
        start = time.perf_counter()
        fetched = _fetch(task, home, opened)
        times["fetch"] = time.perf_counter() - start
        outcome = _run_in_scratch(task, home, base, cancelled)
        times["run"] = time.perf_counter() - start - times["fetch"]
        facts = {**fetched, "started": round(started, 3), "push_listed": False}
        if outcome.ok and task.push_behind:
            outcome.pushing = True
            facts["ended"] = round(time.time(), 3)  # the task's end: the push follows
            pushed = replace(outcome, where=where)  # the copy the push fills in
            _pusher().submit(_push_behind, task, home, base, opened, pushed, facts, times, announce)
        else:
            if outcome.ok:
                facts.update(_push(task, home, opened, outcome))
                times["push"] = time.perf_counter() - start - times["fetch"] - times["run"]
            _log(base, task, facts, outcome, times)
    except PivotError as exc:
        outcome = Outcome(
            task.stage_id, False, error=f"Stage {task.stage_id} failed on worker {where}: {exc}"
        )
    if not outcome.ok and not outcome.interrupted:
        outcome.error = f"{outcome.error}\n(It ran on the Dask worker {where}.)"
    outcome.where = where
    return outcome


def pushed(outcome: Outcome, message: dict[str, Any]) -> Outcome | None:
    """The outcome of a stage whose task returned while its push went on, completed with
    the worker's word on the push (`message`, from `_push_behind`): with the locations of
    its blobs, or failed with the push's error; None when the word is about other outputs
    (the task ran again elsewhere and the stage gave other bytes)."""
    ran = {path: out["hash"] for path, out in outcome.outs.items()}
    if message.get("outs") != ran:
        return None
    if not message.get("ok"):
        error = str(message.get("error") or f"Stage {outcome.stage_id}'s push failed.")
        return replace(outcome, ok=False, outs={}, stats=[], error=error, pushing=False)
    return replace(outcome, locations=pickle.loads(message["locations"]), pushing=False)


_PUSHER: list[Any] = []  # the worker process's pool of push threads, made on first use


def _pusher() -> Any:
    import concurrent.futures as cf

    with _REMOTES_LOCK:
        if not _PUSHER:
            _PUSHER.append(cf.ThreadPoolExecutor(PUSH_THREADS, thread_name_prefix="pivot-push"))
        return _PUSHER[0]


def _push_behind(
    task: Task,
    home,
    base: pathlib.Path,
    opened: _Opened,
    outcome: Outcome,
    facts: dict[str, Any],
    times: dict[str, float],
    announce: Callable[[dict[str, Any]], None],
) -> None:
    """Push a stage's outputs after its task returned, then tell the coordinator how it
    went: always, whatever fails here (the coordinator waits for this word)."""
    message: dict[str, Any] = {
        "stage": task.stage_id,
        "outs": {path: out["hash"] for path, out in outcome.outs.items()},
        "ok": False,
    }
    start = time.perf_counter()
    try:
        facts = {**facts, **_push(task, home, opened, outcome)}
        times["push"] = time.perf_counter() - start
        _log(base, task, facts, outcome, times)
        message.update(ok=True, locations=pickle.dumps(outcome.locations))
    except PivotError as exc:
        message["error"] = (
            f"Stage {task.stage_id} ran, but its outputs could not be pushed from worker "
            f"{outcome.where}: {exc}"
        )
    except BaseException as exc:  # a bug in Pivot: still reported, never left unanswered
        message["error"] = (
            f"Stage {task.stage_id} ran, but pushing its outputs from worker "
            f"{outcome.where} failed: {type(exc).__name__}: {exc}"
        )
    announce(message)


class _Opened:
    """A remote as this worker process keeps it across tasks: the store (its client, e.g.
    boto3's, made once) and where the worker knows blobs lie on it (named by tasks, pushed
    here, or read from its indexes), so that most tasks need no listing of the remote."""

    def __init__(self, remote: Any) -> None:
        from pivot.remote.index_cache import RemoteContents

        self.remote = remote
        self.known = RemoteContents()
        self._lock = threading.Lock()

    def learn(self, locations: dict[str, Any]) -> None:
        """Locations just told (by a task, or a push here): newer than those known."""
        with self._lock:
            self.known.blobs.update(locations)

    def refresh(self, home) -> Any:
        """List the remote (reading only the indexes not cached yet): what it holds now
        replaces what the worker knew (stale locations among it)."""
        from pivot.remote.transfer import remote_contents

        contents = remote_contents(home, self.remote)
        with self._lock:
            self.known = contents
        return contents


_REMOTES: dict[str, _Opened] = {}  # kept by the worker process across tasks
_WORKSPACES: dict[pathlib.Path, Any] = {}  # the home's workspace (its state db open), likewise
_BUNDLES: set[tuple[str, str]] = set()  # (cache, code bundle) found whole in that cache
# By worker folder: the home's folder stamps, those folders and the project (`_home`).
_HOMES: dict[pathlib.Path, tuple[Any, tuple[str, ...], Any]] = {}
_REMOTES_LOCK = threading.Lock()


def _open_remote(
    url: str, name: str | None, options: dict[str, Any], base: pathlib.Path
) -> _Opened:
    """A task's remote, opened once per worker process."""
    from pivot.remote.stores import open_remote

    key = json.dumps([url, name, options], sort_keys=True)
    with _REMOTES_LOCK:
        if key not in _REMOTES:
            _REMOTES[key] = _Opened(
                open_remote(url, name=name or "remote", options=options, base=base)
            )
        return _REMOTES[key]


def _workspace(home) -> Any:
    """The workspace of the worker's home, opened once per worker process (its state
    database serves the push threads and the tasks together: it is thread-safe)."""
    from pivot.cache.workspace import workspace_of

    with _REMOTES_LOCK:
        if home.root not in _WORKSPACES:
            _WORKSPACES[home.root] = workspace_of(home)
        return _WORKSPACES[home.root]


def warm(remote_url: str, remote_name: str | None, remote_options: dict[str, Any]) -> None:
    """Ready this worker process for a run before its first task arrives: the remote's
    client made (boto3's costs a first task most of a second) and spare stage servers
    started, which the threads adopt: one, or one per thread holding a server (each
    needs a new one for a run of new code, or once a module it imported changed). The
    coordinator asks for it while it still plans; a failure is left for the task to
    report."""
    base = worker_dir()
    for aside in (base / "scratch").glob(f"*{_ASIDE}*"):
        shutil.rmtree(aside, ignore_errors=True)
    with contextlib.suppress(Exception):
        home = _home(base)
        _open_remote(remote_url, remote_name, remote_options, home.root)
    with _REMOTES_LOCK:
        for _ in range(max(1, len(_SERVING)) - len(_SPARES)):
            _SPARES.append(_StageServer(None, base / "scratch"))


def _fetch(task: Task, home, opened: _Opened) -> dict[str, Any]:
    """Bring the bundle and the deps into the worker's cache (what it lacks only): from
    the locations the task names without listing the remote, else after a listing."""
    from pivot.cache.hashing import DIR
    from pivot.cache.objects import LocalCache
    from pivot.errors import RemoteIncomplete
    from pivot.remote.transfer import fetch_outputs

    cache = LocalCache(home.cache_dir, home.tmp_dir)
    wanted = list(task.deps.values())
    bundle = (str(home.cache_dir), task.bundle)
    if bundle not in _BUNDLES:
        wanted.insert(0, (task.bundle, DIR))
    missing = [output for output in dict.fromkeys(wanted) if cache.missing(*output)]
    if not missing:
        _BUNDLES.add(bundle)
        return {"outputs": [], "blobs": 0, "bytes": 0, "fetch_listed": False}
    opened.learn(task.locations)
    remote = opened.remote
    ws = _workspace(home)
    summaries = []
    if all(digest in opened.known.blobs for digest, _ in missing):
        # A failure (e.g. a pack merged away by a remote gc since) falls back to a listing.
        with contextlib.suppress(PivotError):
            summaries.append(fetch_outputs(home, remote, missing, contents=opened.known, ws=ws))
    listed = not summaries or bool(summaries[0].missing)
    if listed:
        contents = opened.refresh(home)
        summaries.append(fetch_outputs(home, remote, missing, contents=contents, ws=ws))
    summary = summaries[-1]
    if summary.missing:
        raise RemoteIncomplete(
            f"the remote {remote.display} lacks {len(summary.missing)} blob(s) the stage "
            f"needs (first: {summary.missing[0][:16]}).",
            remote=remote.name,
            display=remote.display,
            missing=tuple(summary.missing),
        )
    _BUNDLES.add(bundle)
    return {
        "outputs": [digest for digest, _ in missing],
        "blobs": sum(s.blobs for s in summaries),
        "bytes": sum(s.bytes_received for s in summaries),
        "fetch_listed": listed,
    }


def _run_in_scratch(task: Task, home, base: pathlib.Path, cancelled: Callable[[], bool]) -> Outcome:
    """Check the bundle and deps out into a fresh scratch project sharing the worker's
    cache, and run the stage there in a child process."""
    from pivot.cache.checkout import checkout
    from pivot.cache.objects import LocalCache
    from pivot.project import Project

    cache = LocalCache(home.cache_dir, home.tmp_dir)
    server = _server((task.bundle, task.run_id), base / "scratch")
    root = server.root
    try:
        if not server.take_layout(task.bundle):
            shutil.rmtree(root, ignore_errors=True)  # what a killed task may have left
            _lay_out(home, task.bundle, root)
        project = Project(root)
        for path, (digest, kind) in task.deps.items():
            dest = project.write_path(path, f"the dep {path} of {task.stage_id}", make_parents=True)
            checkout(cache, digest, kind, dest)
        outcome = _run_child(task, project, server, cancelled)
    finally:
        _discard(root)
    if getattr(_SERVERS, "server", None) is server:  # still this thread's: ready its next task
        server.lay_out_ahead(home, task.bundle)
    outcome.snapshots = {}  # of the scratch folders: of no use to the coordinator
    # Paths as the user knows them: the stage's files are in the coordinator's project.
    outcome.error = outcome.error.replace(str(root), task.project_root)
    outcome.output = outcome.output.replace(str(root), task.project_root)
    return outcome


def _lay_out(home, bundle: str, root: pathlib.Path) -> str:
    """A fresh scratch project at `root` (which must not exist): the code bundle checked
    out (verified), `.pivot/` with the worker's cache linked in; returns `bundle`."""
    from pivot.cache.checkout import checkout
    from pivot.cache.hashing import DIR
    from pivot.cache.objects import LocalCache

    checkout(LocalCache(home.cache_dir, home.tmp_dir), bundle, DIR, root)
    (root / ".pivot" / "stages").mkdir(parents=True)
    (root / ".pivot" / "tmp").mkdir()
    os.symlink(home.cache_dir, root / ".pivot" / "cache")
    return bundle


def _discard(root: pathlib.Path) -> None:
    """Remove a task's scratch project behind the task: renamed aside at once (the
    server's next task lays out a fresh one under the same name), deleted by a push
    thread; a folder left aside by a killed worker is removed by the next `warm`."""
    aside = root.with_name(f"{root.name}{_ASIDE}{uuid.uuid4().hex}")
    try:
        os.rename(root, aside)
    except OSError:
        shutil.rmtree(root, ignore_errors=True)
        return
    try:
        _pusher().submit(shutil.rmtree, aside, ignore_errors=True)
    except RuntimeError:  # the worker process is exiting: no thread takes it
        shutil.rmtree(aside, ignore_errors=True)


def _run_child(task: Task, project, server: _StageServer, cancelled: Callable[[], bool]) -> Outcome:
    """Run the stage in a fresh process forked by this thread's stage server (so no state
    leaks between stages and a stage that kills its process fails alone)."""
    root = project.root
    request = root / ".pivot" / "tmp" / "request.json"
    result = root / ".pivot" / "tmp" / "outcome.pickle"
    log = root / ".pivot" / "tmp" / "output.log"
    request.write_text(
        json.dumps(
            {
                "root": str(root),
                "run": task.run_id,
                "stage_id": task.stage_id,
                "source": task.source,
                "fingerprint": task.fingerprint,
                "cache_dir": str(project.cache_dir),
                "tmp_dir": str(project.tmp_dir),
                "result": str(result),
            }
        )
    )
    log.touch()
    interrupted = Outcome(
        task.stage_id, False, error=f"Stage {task.stage_id} was interrupted.", interrupted=True
    )
    try:
        pid = server.start(request, log, cancelled)
        if pid is None:  # cancelled while the server imported the pipeline file
            _SERVERS.server = None
            server.close()
            return interrupted
        while (status := server.status(CANCEL_POLL)) is None:
            if cancelled():
                _kill_group(pid)
                server.status(None)
                return interrupted
    except BaseException:
        _SERVERS.server = None
        server.close()
        raise
    output = _tail(log)
    try:
        with open(result, "rb") as f:
            outcome: Outcome = pickle.load(f)
    except FileNotFoundError:
        if os.WIFSIGNALED(status):
            how = f"signal {os.WTERMSIG(status)}"
        else:
            how = f"exit code {os.waitstatus_to_exitcode(status)}"
        outcome = Outcome(
            task.stage_id,
            False,
            error=(
                f"Stage {task.stage_id} did not finish: its process died ({how}), e.g. "
                f"killed, out of memory, or os._exit()."
            ),
        )
    outcome.output = output
    return outcome


class _StageServer:
    """`python -m pivot.run.stage_process`, started once per worker thread and code
    bundle (kept for the next run while `fresh`), with the scratch folder `root` its
    tasks run in (always the same, since the server keeps the pipeline files it imported
    from there)."""

    def __init__(self, serves: tuple[str, str] | None, scratch: pathlib.Path) -> None:
        # (code bundle, run id); None: a spare, which has imported no project code yet
        self.serves = serves
        scratch.mkdir(parents=True, exist_ok=True)
        self.root = scratch / uuid.uuid4().hex
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pivot.run.stage_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._pending = b""  # answer bytes read but not yet used
        # The next task's scratch project, laid out behind the task before (`_lay_out`).
        self._layout: Any = None  # a Future of the bundle laid out at `root`

    def lay_out_ahead(self, home, bundle: str) -> None:
        """Start laying out a fresh scratch project of `bundle` at `root` for this
        server's next task (the last one's was moved aside by `_discard`), off its path."""
        with contextlib.suppress(RuntimeError):  # the worker process is exiting
            self._layout = _pusher().submit(_lay_out, home, bundle, self.root)

    def take_layout(self, bundle: str) -> bool:
        """Whether `root` holds a fresh scratch project of `bundle`, laid out ahead and
        untouched since (else the caller lays one out: the error, if any, is then its)."""
        layout, self._layout = self._layout, None
        if layout is None or layout.cancel():  # not begun (the threads push): not waited for
            return False
        try:
            return layout.result() == bundle
        except Exception:
            return False

    def start(
        self, request: pathlib.Path, log: pathlib.Path, cancelled: Callable[[], bool]
    ) -> int | None:
        """The pid of the stage's child; None if the run was cancelled before it started
        (the server may first import the pipeline file, which can take a while)."""
        assert self.proc.stdin is not None
        line = json.dumps({"request": str(request), "log": str(log)}) + "\n"
        self.proc.stdin.write(line.encode())
        while (answer := self._answer(CANCEL_POLL)) is None:
            if cancelled():
                return None
        return int(answer["pid"])

    def status(self, timeout: float | None) -> int | None:
        """The stage child's wait status, or None if it still runs after `timeout`."""
        answer = self._answer(timeout)
        return None if answer is None else int(answer["status"])

    def _answer(self, timeout: float | None) -> dict | None:
        """The server's next answer line; None if none came within `timeout`."""
        import select

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            data = os.read(fd, 4096)
            if not data:
                raise PivotError("the worker's stage server exited unexpectedly.")
            self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def fresh(self) -> bool:
        """Whether this server may serve another run of its code bundle: alive, and no
        module it imported changed on disk since (it checks: `stage_process`)."""
        if self.proc.poll() is not None:
            return False
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b'{"check": true}\n')
            answer = self._answer(SERVER_CHECK_TIMEOUT)
        except (OSError, PivotError, ValueError):
            return False
        return bool(answer and answer.get("fresh") is True)

    def close(self) -> None:
        with _REMOTES_LOCK:
            _SERVING.discard(self)
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        self.take_layout("")  # a layout under way is done before its folder is removed
        shutil.rmtree(self.root, ignore_errors=True)


_SERVERS = threading.local()
_SPARES: list[_StageServer] = []  # started by `warm`, not yet any thread's
_SERVING: set[_StageServer] = set()  # the threads' servers


def _server(serves: tuple[str, str], scratch: pathlib.Path) -> _StageServer:
    """This thread's stage server for `serves` (code bundle, run id); a spare one when
    there is one. A new one when the code changed (the old one imported the old code);
    the same one for a new run of the same code only if no module it imported changed on
    disk since (`fresh`): the modules a run's pipeline files imported (a third-party
    package among them) stay in the server, and a package upgraded on the worker since
    must not run its old code in memory while the fingerprint check reads its new
    version."""
    server = getattr(_SERVERS, "server", None)
    if server is not None and server.serves != serves:
        if server.serves is not None and server.serves[0] == serves[0] and server.fresh():
            server.serves = serves
        else:
            _SERVERS.server = None
            server.close()
            server = None
    if server is not None and server.proc.poll() is not None:
        _SERVERS.server = None
        server.close()
        server = None
    if server is None:
        with _REMOTES_LOCK:
            spare = _SPARES.pop() if _SPARES else None
        if spare is not None and spare.proc.poll() is None and spare.root.parent == scratch:
            spare.serves = serves
            server = spare
        else:
            if spare is not None:
                spare.close()
            server = _StageServer(serves, scratch)
        _SERVERS.server = server
        with _REMOTES_LOCK:
            _SERVING.add(server)
    return server


def _kill_group(pid: int) -> None:
    """Kill the stage child and what it started (its own process group, once it made it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, 9)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


def _tail(log: pathlib.Path) -> str:
    with open(log, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - OUTPUT_TAIL))
        return f.read().decode("utf-8", "replace")


def _push(task: Task, home, opened: _Opened, outcome: Outcome) -> dict[str, Any]:
    """Send the outputs and the run record to the remote (the coordinator writes its own
    lock and record; the remote's record lets any clone restore the stage), and note in
    the outcome where their blobs lie, for the tasks that read them.

    Outputs of up to `UNLISTED_PUSH` bytes are sent whole without listing the remote
    first: sending again a blob that is already there costs less than the listing (and
    what the worker knows of the remote may be stale: a blob a remote gc removed since
    must be sent again)."""
    from pivot._fs import write_bytes
    from pivot.cache.objects import LocalCache
    from pivot.cache.runs import RunRecords, encode_record
    from pivot.errors import RemoteIncomplete
    from pivot.remote.index_cache import RemoteContents
    from pivot.remote.transfer import push_outputs

    remote = opened.remote
    # Not fsynced (two fsyncs cost a tiny stage several ms): the worker's copy is only
    # what the push reads, and the coordinator records the stage only once the remote's
    # copy is stored.
    record = RunRecords(home.cache_dir).path(task.run_key)
    write_bytes(record, encode_record(outcome.outs), sync=False)
    outputs = [(o["hash"], o["kind"]) for o in outcome.outs.values()]
    small = sum(o.get("size", 0) for o in outcome.outs.values()) <= UNLISTED_PUSH
    nothing = RemoteContents() if small else None  # else: the remote is listed
    summary = push_outputs(
        home, remote, outputs, [task.run_key], contents=nothing, ws=_workspace(home)
    )
    if summary.missing or summary.missing_runs:
        raise RemoteIncomplete(
            f"the outputs could not all be pushed to {remote.display}.",
            remote=remote.name,
            display=remote.display,
            missing=tuple(summary.missing),
        )
    opened.learn(summary.stored)
    outcome.locations = _locations(LocalCache(home.cache_dir, home.tmp_dir), outputs, opened)
    return {"push_listed": not small}


def _locations(cache, outputs: list[tuple[str, str]], opened: _Opened) -> dict[str, dict]:
    """Output hash -> where each of its blobs lies on the remote, for outputs whose blobs
    the worker knows all of (and has at most `MAX_LOCATIONS`)."""
    from pivot.cache.hashing import DIR

    found = {}
    known = opened.known.blobs
    for digest, kind in outputs:
        blobs = [digest]
        if kind == DIR:
            blobs += [entry.hash for entry in cache.tree(digest)]
        if len(blobs) <= MAX_LOCATIONS and all(b in known for b in blobs):
            found[digest] = {b: known[b] for b in blobs}
    return found


def _log(
    base: pathlib.Path,
    task: Task,
    facts: dict[str, Any],
    outcome: Outcome,
    times: dict[str, float],
) -> None:
    """One JSON line per task in `tasks.log` (written once its push ended, if any): what
    was fetched, how it ended, its times."""
    line = {
        "stage": task.stage_id,
        "run_key": task.run_key,
        "fetched": facts["outputs"],  # hashes of the bundle and deps fetched
        "fetched_blobs": facts["blobs"],
        "fetched_bytes": facts["bytes"],
        "fetch_listed": facts["fetch_listed"],  # whether the remote was listed
        "push_listed": facts["push_listed"],
        "ok": outcome.ok,
        "started": facts["started"],
        "ended": facts.get("ended", round(time.time(), 3)),  # when the task returned
        "pushed": round(time.time(), 3) if "push" in times else None,  # the push's end
        "stage_seconds": round(outcome.seconds, 4),
        **{f"{step}_seconds": round(took, 4) for step, took in times.items()},
    }
    with open(base / "tasks.log", "a") as f:
        f.write(json.dumps(line) + "\n")
