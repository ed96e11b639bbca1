"""Where stages execute: the interface the scheduler drives, and what a stage reports.

The scheduler decides what runs and in which order; an executor only runs the stage it is
handed and reports an `Outcome` (its outputs already in the local cache). The local
process pool (`run/local.py`) is one; another (a cluster) implements the same calls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import concurrent.futures as cf

    from pivot.errors import PivotError


@dataclass
class Outcome:
    """What a worker sends back: the cached outputs, or the user's error."""

    stage_id: str
    ok: bool
    outs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: list[tuple[str, os.stat_result, str]] = field(default_factory=list)
    error: str = ""
    # The Pivot error behind a failure (class, data, hint: the CLI's advice), or None.
    cause: PivotError | None = None
    seconds: float = 0.0
    interrupted: bool = False  # the stage stopped on Ctrl-C (KeyboardInterrupt)
    undeclared: list[str] = field(default_factory=list)  # new paths no stage declares
    executor_lost: bool = False  # the executor itself failed: it can run nothing more


class Executor(Protocol):
    """Runs stages handed to it, as many at once as it was created for."""

    def submit(self, stage_id: str) -> cf.Future[Outcome]:
        """Start the stage; the future resolves to its outcome (never raises for a stage's
        own failure: that is an outcome with `ok` False)."""
        ...

    def outcome(self, future: cf.Future[Outcome], stage_id: str) -> Outcome:
        """The outcome of a finished future; a failure of the executor itself (a worker
        that died) becomes a failed outcome with `executor_lost` set."""
        ...

    def cancel(self, future: cf.Future[Outcome], stage_id: str) -> None:
        """Stop the running stage (called from another thread than the one waiting on
        `future`); returns once it stopped. Its future then resolves to a failed outcome."""
        ...

    def shutdown(self) -> None:
        """Wait for what runs, cancel what waits, release the workers."""
        ...
