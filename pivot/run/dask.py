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
from typing import TYPE_CHECKING, Any

from pivot.cache.hashing import DIR
from pivot.errors import DefinitionError, MissingPackage, PivotError, RemoteIncomplete
from pivot.run.executor import Outcome
from pivot.run.worker import Task, run_task

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.define.stage import StageSpec
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
    ) -> None:
        require_distributed()
        import distributed

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
        self._remote_spec = _remote_spec(ws, remote)
        try:
            self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise PivotError(
                f"Cannot connect to the Dask scheduler at {address}: {exc}. Start it "
                f"(`dask scheduler`) or fix the address (--scheduler, or `dask.scheduler` in "
                f".pivot/config.yaml). Nothing was submitted."
            ) from None
        try:
            check_resources(self.client.scheduler_info(), may_run, address)
            self._cancel_name = f"pivot-cancel-{uuid.uuid4().hex}"
            self._cancel = distributed.Event(self._cancel_name, client=self.client)
        except BaseException:
            self.client.close()
            raise

    # -- the Executor calls ----------------------------------------------------------------

    def submit(self, decision: Decision) -> cf.Future[Outcome]:
        task = self._task(decision)
        result: cf.Future[Outcome] = cf.Future()
        result.set_running_or_notify_cancel()
        self._send(task, decision.stage, result, attempt=0)
        return result

    def outcome(self, future: cf.Future[Outcome], stage_id: str) -> Outcome:
        return future.result()

    def shutdown(self) -> None:
        """Cancel every task still submitted (also those running: their worker kills the
        stage's process), then disconnect."""
        with self._lock:
            pending = list(self._futures)
            self._futures.clear()
        try:
            if pending:
                self._cancel.set()
                self.client.cancel(pending, force=True)
        finally:
            self.client.close(timeout=5)

    # -- submitting ------------------------------------------------------------------------

    def _send(self, task: Task, stage: StageSpec, result: cf.Future[Outcome], attempt: int):
        future = self.client.submit(
            _dask_task,
            task,
            self._cancel_name,
            key=f"pivot-{task.stage_id}-{uuid.uuid4().hex[:12]}",
            resources=dask_resources(stage.resources) or None,
            pure=False,
        )
        with self._lock:
            self._futures[future] = result
        future.add_done_callback(lambda f: self._settle(f, task, stage, result, attempt))

    def _settle(self, future: Any, task: Task, stage: StageSpec, result, attempt: int) -> None:
        """Turn a finished Dask future into the stage's outcome (resubmitting a stage whose
        worker died, up to `retries` times)."""
        with self._lock:
            if self._futures.pop(future, None) is None:
                return  # cancelled by shutdown
        if future.status == "finished":
            outcome: Outcome = future.result()
            self._locations.update(outcome.locations)
            result.set_result(outcome)
            return
        if future.status == "cancelled":
            result.set_result(_interrupted(task.stage_id))
            return
        exc = future.exception()
        from distributed import KilledWorker

        if isinstance(exc, KilledWorker):
            if attempt < self.retries:
                self._send(task, stage, result, attempt + 1)
                return
            error = (
                f"Stage {task.stage_id} ({stage.source}) did not finish: the Dask worker "
                f"running it died ({exc}), {attempt + 1} time(s) with Pivot's retries "
                f"(`dask.retries` in .pivot/config.yaml, now {self.retries})."
            )
        else:
            error = (
                f"Stage {task.stage_id} ({stage.source}) failed on the Dask cluster: "
                f"{type(exc).__name__}: {exc}"
            )
        result.set_result(Outcome(task.stage_id, False, error=error))

    def _task(self, decision: Decision) -> Task:
        """The task of a decided stage, once its code and deps are on the remote."""
        stage = decision.stage
        assert decision.run_key is not None
        deps = {path: (digest, self._kind(path, digest)) for path, digest in decision.deps.items()}
        if self._bundle is None:
            from pivot.run.bundle import build_bundle

            self._bundle = build_bundle(self.ws, self._outputs)
        needed = [(self._bundle, DIR), *deps.values()]
        self._ensure_on_remote(needed, deps)
        locations: dict[str, Any] = {}
        for digest, kind in needed:
            locations.update(self._where(digest, kind))
        url, name, options = self._remote_spec
        return Task(
            stage_id=stage.id,
            source=self.ws.project.rel(stage.source),
            bundle=self._bundle,
            deps=deps,
            fingerprint=decision.fingerprint,
            run_key=decision.run_key,
            project_root=str(self.ws.project.root),
            run_id=self._cancel_name,
            remote_url=url,
            remote_name=name,
            remote_options=options,
            locations=locations,
        )

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

    def note_on_remote(self, outs: dict[str, dict[str, Any]]) -> None:
        """Outputs a worker pushed: their blobs need no upload for downstream stages."""
        self._on_remote.update(o["hash"] for o in outs.values())


def _dask_task(task: Task, cancel_name: str) -> Outcome:
    """The function Dask runs on a worker: `run_task`, cancelled by the run's event."""
    import distributed

    event = distributed.Event(cancel_name)
    return run_task(task, cancelled=event.is_set)


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
