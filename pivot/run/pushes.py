"""The coordinator's wait for the pushes cluster workers make behind their tasks.

A worker's task returns as soon as the stage ran (its outputs in that worker's cache,
`Outcome.pushing` set) and pushes them in the background (`worker.run_task`); a stage
downstream may run on the same worker meanwhile. The worker then logs a Dask event on the
run's topic (`topic`) saying the push ended, with the output hashes and where their blobs
lie, or with its error. `PushWaits` holds each such outcome until that word arrives and
only then hands it on (to be recorded): a stage whose worker left the cluster before
saying it is handed on as lost, never as ran, so no lock names an output the remote may
lack.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections.abc import Callable
from typing import Any

from pivot.run.executor import Outcome
from pivot.run.worker import pushed

log = logging.getLogger(__name__)


def topic(run_id: str) -> str:
    """The Dask event topic on which a run's workers say their pushes ended."""
    return f"pivot-pushed-{run_id}"


class PushWaits:
    """Outcomes waiting for their worker's word on the push, by Dask key."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self._topic = topic(run_id)
        self._lock = threading.Lock()
        # Dask key -> (the worker's address, its outcome, what to call with the result)
        self._waiting: dict[str, tuple[str, Outcome, Callable[[Outcome | None], None]]] = {}
        self._heard: dict[str, dict[str, Any]] = {}  # words that came before their outcome
        # Keys whose result a worker that left the cluster held or was computing (a new
        # worker may take the same address: the keys, not the address, say what is lost).
        self._lost: set[str] = set()
        # The callers' follow-ups (a resubmission among them) run off Dask's event loop.
        self._calls = cf.ThreadPoolExecutor(1, thread_name_prefix="pivot-pushed")
        client.subscribe_topic(self._topic, self._heard_from_worker)
        client.subscribe_topic("all", self._heard_from_cluster)

    def wait(
        self, key: str, address: str, outcome: Outcome, then: Callable[[Outcome | None], None]
    ) -> None:
        """Call `then` with `outcome` completed by the word on its push (`worker.pushed`:
        with its blobs' locations, or failed), or with None if the worker at `address`
        left the cluster before it said, holding `key`'s result (the stage's outputs may
        not all be on the remote)."""
        with self._lock:
            message = self._heard.pop(key, None)
            if message is None and key not in self._lost:
                self._waiting[key] = (address, outcome, then)
                return
        self._calls.submit(_answer, then, outcome, message)

    def close(self) -> None:
        """Stop listening (the run ends; what still waits is not recorded)."""
        for name in (self._topic, "all"):
            self._client.unsubscribe_topic(name)
        self._calls.shutdown(wait=False)

    def _heard_from_worker(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        with self._lock:
            waiting = self._waiting.pop(message["key"], None)
            if waiting is None:
                self._heard[message["key"]] = message
                return
        _, outcome, then = waiting
        self._calls.submit(_answer, then, outcome, message)

    def _heard_from_cluster(self, event: tuple[float, Any]) -> None:
        message = event[1]
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        address = message.get("worker")
        keys = {
            key
            for part in ("processing-tasks", "lost-computed-tasks", "lost-scattered-tasks")
            for key in message.get(part) or ()
        }
        with self._lock:
            self._lost.update(keys)
            lost = [k for k, (at, _, _) in self._waiting.items() if at == address or k in keys]
            thens = [self._waiting.pop(key)[2] for key in lost]
        for then in thens:
            self._calls.submit(then, None)


def _answer(
    then: Callable[[Outcome | None], None], outcome: Outcome, message: dict[str, Any] | None
) -> None:
    """`then` with the outcome the word completes; None (lost) for no word or one that
    cannot be read."""
    try:
        result = None if message is None else pushed(outcome, message)
    except Exception:  # a bug in Pivot: the stage is taken as lost, never recorded
        log.warning(
            f"Cannot read a worker's word on the push of {outcome.stage_id}.", exc_info=True
        )
        result = None
    then(result)
