"""`python -m pivot.run.stage_process`: a stage server for one cluster worker thread.

It imports Pivot once, then for each request (a line naming a JSON request file and a log
file) forks a fresh child that runs one stage of a scratch project as the local executor
runs it (`local.execute_here`), after checking that its code fingerprint there is the one
the coordinator planned with. The child's output goes to the log, its `Outcome` is
pickled to the file the request names. The server answers `{"pid": N}` when the child
starts and `{"status": S}` (a wait status) when it ends; it dies with its worker, and
each child with the server. Forking from a server that never ran a stage gives each stage
a clean process without paying for an interpreter start and Pivot's imports.

Like the local executor, which imports the pipelines once per run before it forks its
workers, the server imports a pipeline file once per run (and scratch folder: the worker
gives one server the same folder for every task, laid out afresh each time) and forks
the children of its stages from there. The worker keeps a server for the next run of the
same code bundle only if the server answers `{"check": true}` with `{"fresh": true}`:
no file of a module it imported from outside its scratch folder (a third-party package,
Pivot itself) changed on disk since it imported it, and no module was added or removed
where it could now be found first (a folder on `sys.path`, or beside an imported one).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pickle
import sys
from typing import TYPE_CHECKING

from pivot.run.executor import Outcome

if TYPE_CHECKING:
    from pivot.discover.loading import LoadedPipeline


def fingerprint_difference(planned: dict[str, str], here: dict[str, str]) -> list[str]:
    """Each part that differs, as `name (coordinator: X, worker: Y)`."""
    return [
        f"{name} (coordinator: {planned.get(name, 'absent')}, worker: {here.get(name, 'absent')})"
        for name in sorted(set(planned) | set(here))
        if planned.get(name) != here.get(name)
    ]


def load(request: dict) -> LoadedPipeline:
    """The request's pipeline file, imported in this process."""
    from pivot.discover.loading import load_file
    from pivot.project import Project

    root = pathlib.Path(request["root"])
    return load_file(Project(root), root / request["source"])


def run(request: dict, loaded: LoadedPipeline | None = None) -> Outcome:
    """Run the requested stage of `loaded` (its pipeline file, when the server imported it
    already), after checking its code fingerprint here."""
    from pivot.errors import PivotError
    from pivot.fingerprint import fingerprint
    from pivot.run import local

    root = pathlib.Path(request["root"])
    stage_id = request["stage_id"]
    try:
        if loaded is None:
            loaded = load(request)
        stage = loaded.stages.get(stage_id.rpartition("/")[2])
        if stage is None or stage.id != stage_id:
            raise PivotError(f"{request['source']} does not define the stage {stage_id} here.")
        here = fingerprint(stage.func, root, stage.params)
    except PivotError as exc:
        return Outcome(stage_id, False, error=f"Stage {stage_id} cannot run on this worker: {exc}")
    differences = fingerprint_difference(request["fingerprint"], here)
    if differences:
        return Outcome(
            stage_id,
            False,
            error=(
                f"Stage {stage_id} ({request['source']}) was refused by the worker: its code "
                f"fingerprint there differs from the coordinator's in "
                f"{'; '.join(differences)}. Install the same versions of the packages the "
                f"stage uses on the workers (or on the coordinator), then run again."
            ),
        )
    local.register_stages({stage_id: stage})
    return local.execute_here(stage_id, root, request["cache_dir"], request["tmp_dir"])


def run_child(request: dict, log_file: str, loaded: LoadedPipeline | None) -> None:
    """In the forked child: own process group, output to the log, run, save, exit: after
    the atexit handlers (logging's flush among them) and a flush of what the stage printed,
    but without the interpreter's teardown of every module, which cost each stage more CPU
    than a small stage itself (the outputs are already in the cache by then)."""
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # not the server's request pipe
        os.close(devnull)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        outcome = run(request, loaded)
        outcome.stats = []  # stat results of the scratch copies mean nothing elsewhere
        with open(request["result"], "wb") as f:
            pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
        code = 0
    finally:
        import atexit

        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)  # the child never returns to the server's loop


def serve() -> None:
    """Answer requests on stdin until it closes (the worker went away)."""
    # Imported once here, for every child: what loading a pipeline, checking its
    # fingerprint and running a stage use (a child importing them paid ~50 ms per stage).
    from pivot import fingerprint
    from pivot.discover import loading
    from pivot.fingerprint import source_imports
    from pivot.run import local
    from pivot.run.local import die_with_parent

    del loading, local, source_imports
    die_with_parent(os.getppid())
    pipelines: dict[tuple[str, str, str], LoadedPipeline | None] = {}
    run_id = None
    stamps = _Stamps()
    for line in sys.stdin:
        paths = json.loads(line)
        if paths.get("check"):
            _answer({"fresh": stamps.fresh()})
            continue
        request = json.loads(pathlib.Path(paths["request"]).read_text())
        if request["run"] != run_id:  # what a run learnt is not trusted by the next one
            run_id = request["run"]
            pipelines = {}
            fingerprint.clear_cache()
        key = (request["run"], request["root"], request["source"])
        if key not in pipelines:
            pipelines[key] = _load_quietly(request, paths["log"])
            stamps.take(request["root"])
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            die_with_parent(server)
            run_child(request, paths["log"], pipelines[key])
        _answer({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _answer({"status": status})


class _Stamps:
    """What each module file this server imported from outside its scratch folder looked
    like on disk when it was imported (inode, size, mtime and ctime in ns: a same-size
    rewrite keeping its mtime still changes the ctime), and so did the folders a new
    module could appear in ahead of one imported: each folder on `sys.path`, each folder
    of a package's `__path__` (a namespace package's portions among them) and each
    folder holding an imported module file (a file or folder added to or removed from a
    folder changes its mtime and ctime: a new `helpers.py` earlier on the path, a new
    package `helpers/` beside `helpers.py`). The scratch folder's files are not stamped:
    it is laid out afresh per task, and the worker keeps a server only for the same code
    bundle (the same bytes)."""

    def __init__(self) -> None:
        self._stamps: dict[str, tuple[int, ...] | None] = {}
        self.take(None)

    def take(self, scratch: str | None) -> None:
        """Stamp the module files imported since the last call, their folders, the
        packages' folders and the folders on `sys.path` (those under `scratch` left out)."""
        inside = None if scratch is None else os.path.join(scratch, "")
        stamps = self._stamps
        folders = {os.path.abspath(entry or os.curdir) for entry in sys.path}
        for module in list(sys.modules.values()):
            with contextlib.suppress(Exception):  # anything may sit in sys.modules
                portions = vars(module).get("__path__")  # a package's: where its modules are
                if portions is not None and not isinstance(portions, str | bytes):
                    folders.update(p for p in portions if isinstance(p, str))
            path = getattr(module, "__file__", None)
            if not isinstance(path, str) or path in stamps:
                continue
            if inside is not None and path.startswith(inside):
                continue
            stamps[path] = _stamp(path)
            folders.add(os.path.dirname(path))
        for folder in folders:
            if folder not in stamps and not (
                inside is not None and os.path.join(folder, "").startswith(inside)
            ):
                stamps[folder] = _stamp(folder)

    def fresh(self) -> bool:
        """Whether every stamped file and folder is as it was when stamped."""
        return all(_stamp(path) == stamp for path, stamp in self._stamps.items())


def _stamp(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _load_quietly(request: dict, log_file: str) -> LoadedPipeline | None:
    """The pipeline file imported here, once per run, so that each child forked for one
    of its stages starts with it (importing it cost each stage as much as a small stage
    runs), and the requested stage's fingerprint computed here once (`_warm`). What its
    import prints goes to the log (this process's stdout is the answer pipe). None if it
    fails: the child imports it again and reports the error."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        loaded = load(request)
    except (Exception, SystemExit):  # e.g. sys.exit() at import: the child reports it
        return None
    else:
        _warm(request, loaded)
        return loaded
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for opened in (fd, *saved):
            os.close(opened)


def _warm(request: dict, loaded: LoadedPipeline) -> None:
    """Fingerprint the requested stage here, so that every child starts with what that
    needs imported (`tempfile` among it) and the pipeline file's source index in memory:
    each child otherwise paid ~20 ms of CPU to import, parse and store it again (its
    scratch project, where the index's disk cache lives, is laid out afresh per task).
    Each child still computes and checks its own stage's fingerprint: the index in memory
    is used only for a file whose content hashes to the one it was built from. A failure
    is left for the child to report."""
    from pivot.fingerprint import fingerprint

    stage = loaded.stages.get(request["stage_id"].rpartition("/")[2])
    if stage is None:
        return
    with contextlib.suppress(Exception):
        fingerprint(stage.func, pathlib.Path(request["root"]), stage.params)


def _answer(message: dict) -> None:
    """One answer line to the worker, on the pipe that is this server's stdout."""
    os.write(1, (json.dumps(message) + "\n").encode())


if __name__ == "__main__":
    serve()
