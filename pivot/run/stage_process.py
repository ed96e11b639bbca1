"""`python -m pivot.run.stage_process`: a stage server for one cluster worker thread.

It imports Pivot once, then for each request (a line naming a JSON request file and a log
file) forks a fresh child that runs one stage of a scratch project as the local executor
runs it (`local.execute_here`), after checking that its code fingerprint there is the one
the coordinator planned with. The child's output goes to the log, its `Outcome` is
pickled to the file the request names. The server answers `{"pid": N}` when the child
starts and `{"status": S}` (a wait status) when it ends; it dies with its worker, and
each child with the server. Forking from a server that never ran a stage gives each stage
a clean process without paying for an interpreter start and Pivot's imports.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import sys

from pivot.run.executor import Outcome


def fingerprint_difference(planned: dict[str, str], here: dict[str, str]) -> list[str]:
    """Each part that differs, as `name (coordinator: X, worker: Y)`."""
    return [
        f"{name} (coordinator: {planned.get(name, 'absent')}, worker: {here.get(name, 'absent')})"
        for name in sorted(set(planned) | set(here))
        if planned.get(name) != here.get(name)
    ]


def run(request: dict) -> Outcome:
    from pivot.discover.loading import load_file
    from pivot.errors import PivotError
    from pivot.fingerprint import fingerprint
    from pivot.project import Project
    from pivot.run import local

    root = pathlib.Path(request["root"])
    stage_id = request["stage_id"]
    project = Project(root)
    try:
        loaded = load_file(project, root / request["source"])
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


def run_child(request_file: str, log_file: str) -> None:
    """In the forked child: own process group, output to the log, run, save, exit (through
    SystemExit, so that the interpreter flushes what the stage printed)."""
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
        request = json.loads(pathlib.Path(request_file).read_text())
        outcome = run(request)
        outcome.stats = []  # stat results of the scratch copies mean nothing elsewhere
        with open(request["result"], "wb") as f:
            pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
        code = 0
    finally:
        raise SystemExit(code)  # the child never returns to the server's loop


def serve() -> None:
    """Answer requests on stdin until it closes (the worker went away)."""
    # Imported once here, for every child: what loading a pipeline, checking its
    # fingerprint and running a stage use (a child importing them paid ~50 ms per stage).
    from pivot import fingerprint
    from pivot.discover import loading
    from pivot.fingerprint import source_imports
    from pivot.run import local
    from pivot.run.local import die_with_parent

    del fingerprint, loading, local, source_imports
    die_with_parent(os.getppid())
    for line in sys.stdin:
        request = json.loads(line)
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            die_with_parent(server)
            run_child(request["request"], request["log"])
        _answer({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _answer({"status": status})


def _answer(message: dict) -> None:
    """One answer line to the worker, on the pipe that is this server's stdout."""
    os.write(1, (json.dumps(message) + "\n").encode())


if __name__ == "__main__":
    serve()
