"""Where stages execute: the interface the scheduler drives, and what a stage reports.

The scheduler decides what runs and in which order; an executor only runs the stage it is
handed and reports an `Outcome`. The local executor (`run/local.py`) leaves the
outputs in the project and the local cache; a cluster executor (`run/dask.py`) leaves them
on the remote, and the scheduler checks out those it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import concurrent.futures as cf

    from pivot.cache.snapshot import Snapshot
    from pivot.cache.state import Row
    from pivot.errors import PivotError
    from pivot.run.plan import Decision


@dataclass
class Outcome:
    """What a worker sends back: the cached outputs, or the user's error."""

    stage_id: str
    ok: bool
    outs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The stat-cache rows of the output files as the stage's child read them (plain
    # tuples: 100,000 `os.stat_result`s took ten times longer to pickle).
    stats: list[Row] = field(default_factory=list)
    error: str = ""
    # The Pivot error behind a failure (class, data, hint: the CLI's advice), or None.
    cause: PivotError | None = None
    seconds: float = 0.0
    interrupted: bool = False  # the stage stopped on Ctrl-C (KeyboardInterrupt)
    undeclared: list[str] = field(default_factory=list)  # new paths no stage declares
    executor_lost: bool = False  # the executor itself failed: it can run nothing more
    output: str = ""  # the end of what the stage printed, when it ran elsewhere
    where: str = ""  # the machine and process that ran it, when not this one
    # Blobs of the outputs left staged, not yet in the cache: (hash, temp file) pairs the
    # scheduler commits with the run record and lock file (its group commit).
    staged: list[tuple[str, str]] = field(default_factory=list)
    # The snapshots of its directory outputs (`snapshot.of_stored`), by project path, for
    # the scheduler to store when the stage ran in this project (not on a cluster).
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    # Output hash -> where its blobs lie on the remote (hash -> PackedBlob), when a
    # cluster worker pushed them.
    locations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A stage a cluster executor started before its decision did not run as decided: the
    # scheduler submits it again.
    resubmit: bool = False
    # A cluster worker still pushes the outputs after its task returned: the executor
    # hands the outcome to the scheduler only once the worker said they are on the remote.
    pushing: bool = False


@runtime_checkable
class Executor(Protocol):
    """Runs stages handed to it, as many at once as it was created for."""

    def submit(self, decision: Decision) -> cf.Future[Outcome]:
        """Start the decided stage (its run key and dep hashes known); the future resolves
        to its outcome (never raises for a stage's own failure: that is an outcome with
        `ok` False)."""
        ...

    def outcome(self, future: cf.Future[Outcome], stage_id: str) -> Outcome:
        """The outcome of a finished future; a failure of the executor itself (a worker
        that died) becomes a failed outcome with `executor_lost` set."""
        ...

    def shutdown(self) -> None:
        """Cancel what was submitted and has not finished (after a failure that stops the
        run or a Ctrl-C), release the workers."""
        ...


@runtime_checkable
class StoppingExecutor(Executor, Protocol):
    """An executor that can also stop one running stage. Only `pivot run --watch` stops a
    single stage (its dispatcher, through `Runner.cancel`), and watch mode runs stages on
    this machine (`--watch` refuses `--executor dask`), so only the local executor is one."""

    def cancel(self, future: cf.Future[Outcome], stage_id: str) -> None:
        """Stop the running stage (called from another thread than the one waiting on
        `future`); returns once it stopped. Its future then resolves to a failed outcome."""
        ...
