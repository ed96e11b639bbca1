"""The Dask executor: stages run as tasks on a Dask distributed cluster, which shares
nothing with this machine but the remote.

The coordinator (this process) keeps planning, lock files and run records. For each
stage it ensures the code bundle (`run/bundle.py`) and the stage's dep blobs are on the
remote, then submits a `worker.Task` (hashes, never secrets); the worker fetches what its
cache lacks, runs the stage and pushes the outputs (`run/worker.py`). The outcome carries
the output hashes; the scheduler checks out those it needs.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import pathlib
import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pivot.cache.hashing import DIR
from pivot.errors import DefinitionError, MissingPackage, PivotError, RemoteIncomplete
from pivot.run.executor import Outcome
from pivot.run.prefetch import Prefetch
from pivot.run.worker import Task, chained, run_task

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.define.stage import StageSpec
    from pivot.remote.index_cache import RemoteContents
    from pivot.run.plan import Decision, Planner
    from pivot.run.remote_view import RemoteAccess

CONNECT_TIMEOUT = "10s"


def require_distributed() -> None:
    """Raise a PivotError naming the extra when `distributed` is not installed (without
    importing it: a run with nothing to execute does not pay for that)."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise MissingPackage(
            "The Dask executor needs the `distributed` package, which is not installed. "
            "Install Pivot with its dask extra: pip install 'pivot[dask]'.",
            package="distributed",
        )


class Connection:
    """Importing `distributed`, connecting to the scheduler at `address` and readying its
    workers (`worker.warm`: the remote's client, a stage server), in a thread started
    while the coordinator still reads the remote and plans: what the first tasks would
    otherwise wait for, about a second each on the coordinator and on every worker."""

    def __init__(self, address: str, spec: tuple[str, str | None, dict[str, Any]] | None):
        self.address = address
        self._spec = spec
        self._client: Any = None
        self._error: BaseException | None = None
        self._abandoned = False  # closed before connecting finished: the thread closes it
        self._thread = threading.Thread(
            target=self._connect, name="pivot-dask-connect", daemon=True
        )
        self._thread.start()

    def _connect(self) -> None:
        try:
            import distributed

            self._client = distributed.Client(
                self.address, timeout=CONNECT_TIMEOUT, set_as_default=False
            )
            if self._abandoned:
                self._client.close(timeout=5)
            elif self._spec is not None:
                self._client.run(_warm, *self._spec, wait=False)
        except BaseException as exc:  # raised by `client()` in the main thread
            self._error = exc

    def client(self) -> Any:
        """The connected client; raises what connecting raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._client

    def close(self) -> None:
        """Disconnect (a run that ended up submitting nothing: it does not wait for a
        scheduler that does not answer)."""
        self._abandoned = True
        self._thread.join(timeout=2)
        if not self._thread.is_alive() and self._client is not None:
            self._client.close(timeout=5)


def connect(ws: Workspace, remote: RemoteAccess, address: str) -> Connection:
    """Start connecting to the cluster in the background (see `Connection`)."""
    require_distributed()
    try:
        spec = _remote_spec(ws, remote)
    except PivotError:
        spec = None  # refused again, with its message, when the executor starts
    return Connection(address, spec)


async def _warm(url: str, name: str | None, options: dict[str, Any]) -> None:
    """Run on each worker by `Connection`, off its event loop."""
    import asyncio

    from pivot.run.worker import warm

    await asyncio.to_thread(warm, url, name, options)


class DaskExecutor:
    """Stages as tasks on the Dask scheduler at `address` (see `Executor`)."""

    def __init__(
        self,
        ws: Workspace,
        stages: dict[str, StageSpec],
        planner: Planner,
        remote: RemoteAccess,
        address: str,
        retries: int,
        may_run: list[StageSpec],
        connection: Connection | None = None,
    ) -> None:
        require_distributed()
        self.ws = ws
        self.stages = stages
        self.planner = planner
        self.remote = remote
        self.address = address
        self.retries = retries
        self._outputs = {out.path for stage in stages.values() for out in stage.outs}
        self._on_remote: set[str] = set()  # blobs known to be on the remote
        # Output hash -> where its blobs lie on the remote (told by workers, or pushed here).
        self._locations: dict[str, dict[str, Any]] = {}
        self._pushed: dict[str, Any] = {}  # blob -> location, of what this process pushed
        self._bundle: str | None = None
        self._lock = threading.Lock()
        self._futures: dict[Any, cf.Future[Outcome]] = {}
        # Output hash -> (address of the worker whose cache holds it, its size in bytes).
        self._holders: dict[str, tuple[str, int]] = {}
        self._dask_of: dict[str, Any] = {}  # stage id -> its latest Dask future
        self._chained: dict[cf.Future, Any] = {}  # chained, not yet ended -> Dask future
        self._prefetch = Prefetch(self._fetch_ahead)
        try:
            self._remote_spec = _remote_spec(ws, remote)
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        connection = connection or Connection(address, None)
        try:
            self._ship_bundle()  # while the connection is still being made
        except BaseException:
            connection.close()
            raise
        try:
            self.client = connection.client()
        except (OSError, TimeoutError) as exc:
            raise PivotError(
                f"Cannot connect to the Dask scheduler at {address}: {exc}. Start it "
                f"(`dask scheduler`) or fix the address (--scheduler, or `dask.scheduler` in "
                f".pivot/config.yaml). Nothing was submitted."
            ) from None
        try:
            check_resources(self.client.scheduler_info(), may_run, address)
        except BaseException:
            self.client.close()
            raise
        self._run_id = f"pivot-run-{uuid.uuid4().hex}"
        from pivot.run.pushes import PushWaits

        self._pushes = PushWaits(self.client, self._run_id)

    # -- the Executor calls ----------------------------------------------------------------

    def submit(self, decision: Decision) -> cf.Future[Outcome]:
        task = self._task(decision)
        result: cf.Future[Outcome] = cf.Future()
        result.set_running_or_notify_cancel()
        self._send(task, decision.stage, result, attempt=0)
        return result

    def outcome(self, future: cf.Future[Outcome], stage_id: str) -> Outcome:
        return future.result()

    def chain(
        self,
        stage: StageSpec,
        deps: dict[str, str],
        upstreams: list[str],
        fingerprint: dict[str, str],
        avoid: set[str],
    ) -> cf.Future[tuple[Outcome | None, str]] | None:
        """Submit `stage` before its `upstreams` (stages submitted in this run) finish,
        with their Dask tasks as dependencies: Dask starts it as soon as they end, on
        the worker that holds their outputs, without a round trip through this process.
        `deps` are the hashes of its other deps. The worker computes its run key from the
        upstreams' outputs and runs it unless that key is in `avoid`. The future resolves
        to (its outcome or None when it did not run, the run key it ran under); `adopt`
        turns it into the stage's outcome once the stage is decided. None when an
        upstream's task is unknown (nothing is submitted)."""
        from pivot.fingerprint import fingerprint_digest
        from pivot.run.plan import run_key_body

        with self._lock:
            parents = [self._dask_of.get(sid) for sid in upstreams]
        if not all(parents):
            return None
        pending = tuple(d.path for d in stage.deps if d.path not in deps)
        task = self._make_task(stage, deps, fingerprint, run_key="")
        task = replace(
            task,
            pending=pending,
            key_body=run_key_body(stage, fingerprint_digest(fingerprint)),
            avoid=frozenset(avoid),
        )
        result: cf.Future[tuple[Outcome | None, str]] = cf.Future()
        result.set_running_or_notify_cancel()
        future = self._submit_task(task, stage, result, parents=tuple(parents))
        with self._lock:
            self._chained[result] = future
        future.add_done_callback(lambda f: self._settle_chained(f, result))
        return result

    def adopt(
        self, chained: cf.Future[tuple[Outcome | None, str]], decision: Decision
    ) -> cf.Future[Outcome]:
        """The outcome of a chained stage now decided to run: the worker's, if it ran the
        stage under the decided run key, else one asking the scheduler to submit it."""
        adopted: cf.Future[Outcome] = cf.Future()
        adopted.set_running_or_notify_cancel()
        sid = decision.stage.id

        def settle(done: cf.Future[tuple[Outcome | None, str]]) -> None:
            outcome, key = done.result()
            if outcome is None or key != decision.run_key:
                outcome = Outcome(sid, False, error=f"Stage {sid} did not run.", resubmit=True)
            adopted.set_result(outcome)

        chained.add_done_callback(settle)
        return adopted

    def drop(self, chained: cf.Future[tuple[Outcome | None, str]]) -> None:
        """Cancel a chained stage decided not to run (skipped, restored or blocked): a
        worker already running it kills the stage's process (see `_dask_task`)."""
        with self._lock:
            future = self._chained.pop(chained, None)
            if future is not None:
                self._futures.pop(future, None)
        if future is not None:
            self.client.cancel([future], force=True)

    def shutdown(self) -> None:
        """Cancel every task still submitted (also those running: their worker kills the
        stage's process, see `_dask_task`), then disconnect."""
        with self._lock:
            pending = list(self._futures)
            self._futures.clear()
        try:
            if pending:
                self.client.cancel(pending, force=True)
            self._pushes.close()
        finally:
            try:
                self._prefetch.close()
            finally:
                self.client.close(timeout=5)

    # -- outputs brought here while the run goes on ---------------------------------------

    def prefetch(self, outputs: list[tuple[str, str]]) -> None:
        """Start fetching these outputs (of stages that ran, to be checked out here at the
        end) into the local cache in the background (`run/prefetch.py`)."""
        self._prefetch.add(outputs)

    def end_prefetch(self) -> None:
        """Stop fetching ahead; returns once no background fetch is under way."""
        self._prefetch.close()

    def _fetch_ahead(self, outputs: list[tuple[str, str]]) -> None:
        """One background batch: only outputs whose blobs the workers located (no listing
        of the remote behind the run's back)."""
        known = self.known_contents(outputs)
        if known is not None:
            self.remote.fetch(outputs, known)

    # -- submitting ------------------------------------------------------------------------

    def _send(self, task: Task, stage: StageSpec, result: cf.Future[Outcome], attempt: int):
        """Submit `task`, preferably to the worker whose cache holds most of its deps'
        bytes (it then fetches nothing: a chain stays on one worker); another worker
        takes it when that one is busy or lacks the stage's resources."""
        held: dict[str, int] = {}
        for digest, _ in task.deps.values():
            if digest in self._holders:
                address, size = self._holders[digest]
                held[address] = held.get(address, 0) + size + 1
        preferred = [max(held, key=held.__getitem__)] if held else None
        future = self._submit_task(task, stage, result, workers=preferred)
        future.add_done_callback(lambda f: self._settle(f, task, stage, result, attempt))

    def _submit_task(
        self,
        task: Task,
        stage: StageSpec,
        result: cf.Future,
        parents: tuple[Any, ...] = (),
        workers: list[str] | None = None,
    ) -> Any:
        """Submit `task` as a Dask task (after `parents`, the Dask futures of its chained
        upstreams), on `workers` if any is free, and note its future as `stage`'s."""
        future = self.client.submit(
            _dask_task,
            task,
            *parents,
            key=f"pivot-{task.stage_id}-{uuid.uuid4().hex[:12]}",
            resources=dask_resources(stage.resources) or None,
            workers=workers,
            allow_other_workers=workers is not None,
            pure=False,
        )
        with self._lock:
            self._futures[future] = result
            self._dask_of[stage.id] = future
        return future

    def _settle(self, future: Any, task: Task, stage: StageSpec, result, attempt: int) -> None:
        """Turn a finished Dask future into the stage's outcome (resubmitting a stage whose
        worker died, up to `retries` times)."""
        with self._lock:
            if self._futures.pop(future, None) is None:
                return  # cancelled by shutdown
        if future.status == "finished":
            outcome, address, _ = future.result()
            if not outcome.pushing:
                result.set_result(outcome)
                return

            def pushed(confirmed: Outcome | None) -> None:
                if confirmed is None:
                    self._died(task, stage, result, attempt, f"it left the cluster ({address})")
                    return
                self._learn(confirmed, address)
                result.set_result(confirmed)

            self._pushes.wait(future.key, address, outcome, pushed)
            return
        if future.status == "cancelled":
            result.set_result(_interrupted(task.stage_id))
            return
        exc = future.exception()
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            self._died(task, stage, result, attempt, str(exc))
            return
        error = (
            f"Stage {task.stage_id} ({stage.source}) failed on the Dask cluster: "
            f"{type(exc).__name__}: {exc}"
        )
        result.set_result(Outcome(task.stage_id, False, error=error))

    def _died(self, task: Task, stage: StageSpec, result, attempt: int, how: str) -> None:
        """The worker running `task` died before its outputs were surely on the remote:
        submit it again, up to `retries` times, then fail the stage."""
        if attempt < self.retries:
            self._send(task, stage, result, attempt + 1)
            return
        error = (
            f"Stage {task.stage_id} ({stage.source}) did not finish: the Dask worker "
            f"running it died ({how}), {attempt + 1} time(s) with Pivot's retries "
            f"(`dask.retries` in .pivot/config.yaml, now {self.retries})."
        )
        result.set_result(Outcome(task.stage_id, False, error=error))

    def _settle_chained(self, future: Any, result: cf.Future[tuple[Outcome | None, str]]):
        """A chained task ended: its outcome if it ran the stage (anything else, an
        upstream's failure included, leaves the stage to its decision)."""
        with self._lock:
            if self._futures.pop(future, None) is None:
                return  # cancelled by shutdown or `drop`
            self._chained.pop(result, None)
        if future.status != "finished":
            result.set_result((None, ""))
            return
        outcome, address, key = future.result()
        if outcome is None or not outcome.pushing:
            result.set_result((outcome, key))
            return

        def pushed(confirmed: Outcome | None) -> None:
            if confirmed is None:  # its worker left: the scheduler submits the stage again
                result.set_result((None, ""))
                return
            self._learn(confirmed, address)
            result.set_result((confirmed, key))

        self._pushes.wait(future.key, address, outcome, pushed)

    def _learn(self, outcome: Outcome, address: str) -> None:
        """Where a finished task's outputs are: on the remote, and in `address`'s cache."""
        self._locations.update(outcome.locations)
        for out in outcome.outs.values():
            self._holders[out["hash"]] = (address, out.get("size", 0))

    def _task(self, decision: Decision) -> Task:
        """The task of a decided stage, once its code and deps are on the remote."""
        assert decision.run_key is not None
        return self._make_task(
            decision.stage, decision.deps, decision.fingerprint, decision.run_key
        )

    def _make_task(
        self,
        stage: StageSpec,
        dep_hashes: dict[str, str],
        fingerprint: dict[str, str],
        run_key: str,
    ) -> Task:
        """The task of `stage` with deps of these hashes, once its code and those deps
        are on the remote."""
        deps = {path: (digest, self._kind(path, digest)) for path, digest in dep_hashes.items()}
        bundle = self._ship_bundle()
        needed = [(bundle, DIR), *deps.values()]
        self._ensure_on_remote(needed, deps)
        locations: dict[str, Any] = {}
        for digest, kind in needed:
            locations.update(self._where(digest, kind))
        url, name, options = self._remote_spec
        return Task(
            stage_id=stage.id,
            source=self.ws.project.rel(stage.source),
            bundle=bundle,
            deps=deps,
            fingerprint=fingerprint,
            run_key=run_key,
            project_root=str(self.ws.project.root),
            run_id=self._run_id,
            remote_url=url,
            remote_name=name,
            remote_options=options,
            locations=locations,
            push_behind=True,
        )

    def _ship_bundle(self) -> str:
        """The code bundle's hash, built and put on the remote once per run."""
        if self._bundle is None:
            from pivot.run.bundle import build_bundle

            bundle = build_bundle(self.ws, self._outputs)
            self._ensure_on_remote([(bundle, DIR)], {})
            self._bundle = bundle
        return self._bundle

    def _where(self, digest: str, kind: str) -> dict[str, Any]:
        """Where the blobs of an output lie on the remote, if this process knows them all
        (else the worker lists the remote to find them)."""
        if digest not in self._locations:
            blobs = [digest]
            if kind == DIR:
                if not self.ws.cache.has(digest):
                    return {}
                blobs += [entry.hash for entry in self.ws.cache.tree(digest)]
            listed = self.remote.contents().blobs
            found = {b: self._pushed.get(b) or listed.get(b) for b in blobs}
            if not all(found.values()):
                return {}
            self._locations[digest] = found
        return self._locations[digest]

    def _kind(self, path: str, digest: str) -> str:
        known = self.planner.known.get(path)
        if known is not None and known["hash"] == digest:
            return known["kind"]
        found = self.ws.hasher.hash_path(path)
        if found is None or found.hash != digest:
            raise PivotError(f"{path} changed or disappeared after it was planned; run again.")
        return found.kind

    def _ensure_on_remote(
        self, outputs: list[tuple[str, str]], deps: dict[str, tuple[str, str]]
    ) -> None:
        """Push what the remote lacks of `outputs` (source files the workers cannot get
        otherwise, outputs restored or computed here and not pushed)."""
        contents = self.remote.contents()
        wanted = [o for o in outputs if o[0] not in self._on_remote and not contents.has_blob(o[0])]
        if not wanted:
            return
        cache = self.ws.cache
        root = self.ws.project.root
        for path, (digest, kind) in deps.items():
            if (digest, kind) in wanted and cache.missing(digest, kind):
                stored, _ = cache.add_output(root / path, root)
                if stored.hash != digest:
                    raise PivotError(f"{path} changed after it was planned; run again.")
        from pivot.remote.transfer import push_outputs

        summary = push_outputs(self.ws.project, self.remote.remote, wanted)
        if summary.missing:
            raise RemoteIncomplete(
                f"Cannot send the inputs of the stages to the remote {self.remote.display}: "
                f"{len(summary.missing)} blob(s) are neither in the local cache nor on the "
                f"remote (first: {summary.missing[0][:16]}).",
                remote=self.remote.remote.name,
                display=self.remote.display,
                missing=tuple(summary.missing),
            )
        self._on_remote.update(digest for digest, _ in wanted)
        self._pushed.update(summary.stored)

    def known_contents(self, outputs: list[tuple[str, str]]) -> RemoteContents | None:
        """Where the blobs of `outputs` lie on the remote, if the workers told all of them
        (the scheduler then fetches them without listing the remote), else None."""
        from pivot.remote.index_cache import RemoteContents

        if not all(digest in self._locations for digest, _ in outputs):
            return None
        known = RemoteContents()
        for digest, _ in outputs:
            known.blobs.update(self._locations[digest])
        return known

    def note_on_remote(self, outs: dict[str, dict[str, Any]]) -> None:
        """Outputs a worker pushed: their blobs need no upload for downstream stages."""
        self._on_remote.update(o["hash"] for o in outs.values())


def _dask_task(
    task: Task, *upstreams: tuple[Outcome | None, str, str]
) -> tuple[Outcome | None, str, str]:
    """The function Dask runs on a worker: `run_task` (for a chained task, completed with
    its upstreams' results first: None if it must not run); the outcome, the address of
    the worker (whose cache now holds the outputs) and the run key it ran under.

    The stage is stopped once Dask no longer wants this task: the coordinator cancelled
    it (`Client.cancel`, on Ctrl-C or for a chained stage decided not to run) or its
    client went away. Dask itself cannot stop a running task's thread; the worker's own
    state of the task, read locally, says it (no request to the scheduler per check)."""
    import distributed

    from pivot.run.pushes import topic

    worker = distributed.get_worker()
    address = worker.address
    if upstreams:
        if any(o is not None and o.pushing and at != address for o, at, _ in upstreams):
            # Outputs of another worker that may not be on the remote yet: the
            # coordinator submits this stage once they are.
            return None, address, ""
        outcomes = [outcome for outcome, _, _ in upstreams]
        ready = chained(task, outcomes) if all(outcomes) else None  # type: ignore[arg-type]
        if ready is None:
            return None, address, ""
        task = ready
    key = worker.get_current_task()

    def cancelled() -> bool:
        state = worker.state.tasks.get(key)
        return state is None or state.state in ("cancelled", "released", "forgotten")

    def announce(message: dict[str, Any]) -> None:
        worker.log_event(topic(task.run_id), {**message, "key": key})

    return run_task(task, announce, cancelled=cancelled), address, task.run_key


def _interrupted(stage_id: str) -> Outcome:
    return Outcome(stage_id, False, error=f"Stage {stage_id} was interrupted.", interrupted=True)


def _remote_spec(ws: Workspace, remote: RemoteAccess) -> tuple[str, str | None, dict[str, Any]]:
    """The remote as workers open it: url and options without any secret (workers use
    their own credentials), a local folder as an absolute path."""
    from pivot import config
    from pivot.remote.stores import LOCAL_PROTOCOLS
    from pivot.urls import split_protocol, url_credentials

    configured = config.get_remote(ws.project, remote.name)
    url = configured.url
    found = url_credentials(url)
    if found:
        raise DefinitionError(
            f"The remote {configured.name!r} holds credentials in its url ({', '.join(found)}); "
            f"Pivot does not send secrets to the workers. Put them in the workers' environment "
            f"(AWS_* variables, a profile) and keep the url plain."
        )
    protocol, rest = split_protocol(url)
    if protocol in LOCAL_PROTOCOLS:
        path = pathlib.Path(rest).expanduser()
        url = os.path.normpath(path if path.is_absolute() else ws.project.root / path)
    options = {k: v for k, v in configured.options.items() if k not in config.SECRET_KEYS}
    return url, configured.name, options


def dask_resources(resources: dict[str, float | str]) -> dict[str, float]:
    """A stage's resources as Dask counts them: sizes such as "8GB" in bytes."""
    from dask.utils import parse_bytes

    converted = {}
    for name, amount in resources.items():
        if isinstance(amount, str):
            try:
                converted[name] = float(parse_bytes(amount))
            except ValueError:
                raise DefinitionError(
                    f"Resource {name!r} = {amount!r} is neither a number nor a size such as '8GB'."
                ) from None
        else:
            converted[name] = float(amount)
    return converted


def check_resources(info: dict[str, Any], stages: list[StageSpec], address: str) -> None:
    """Refuse, before anything is submitted, a stage no worker of the cluster can run."""
    workers = info.get("workers", {})
    if not workers:
        raise PivotError(
            f"The Dask scheduler at {address} has no workers. Start some (`dask worker "
            f"{address}`) and run again."
        )
    offered = [w.get("resources") or {} for w in workers.values()]
    for stage in stages:
        needed = dask_resources(stage.resources)
        if needed and not any(
            all(have.get(name, 0) >= amount for name, amount in needed.items()) for have in offered
        ):
            shown = ", ".join(f"{k}={v}" for k, v in stage.resources.items())
            what = "; ".join(
                ", ".join(f"{k}={v:g}" for k, v in sorted(have.items())) or "none"
                for have in offered
            )
            raise DefinitionError(
                f"Stage {stage.id} ({stage.source}) needs the resources {shown}, which no "
                f"worker of the Dask cluster at {address} offers (the workers offer: {what}). "
                f"Start a worker with them (`dask worker {address} --resources "
                f'"{",".join(f"{k}={v:g}" for k, v in needed.items())}"`) or change the '
                f"stage's resources. Nothing was submitted.",
                stage=stage.id,
            )
