"""Outputs of stages that ran on a cluster, brought into the local cache in the background
while the run goes on, so that the checkout at the run's end fetches only what the last
stages made.

One thread fetches in batches (what finished within `GATHER` seconds goes in one fetch,
so a run of many short stages does not pay a fetch per stage). It only ever adds
verified blobs to the cache, through the same fetch as the end of the run; whatever it
did not bring (not yet started, or failed: a remote error is reported by the final fetch,
which tries again) is fetched at the end as before.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

Output = tuple[str, str]

GATHER = 1.0  # seconds of finished stages gathered into one fetch

log = logging.getLogger(__name__)


class Prefetch:
    """Fetches queued outputs with `fetch` in a background thread, in batches."""

    def __init__(self, fetch: Callable[[list[Output]], object]) -> None:
        self._fetch = fetch
        self._queue: list[Output] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, outputs: list[Output]) -> None:
        """Queue outputs to fetch (ignored once closed)."""
        if not outputs:
            return
        with self._cond:
            if self._closed:
                return
            self._queue.extend(outputs)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="pivot-prefetch", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Stop: drop what is queued and wait for the fetch under way, if any (its blobs
        are then in the cache, or it failed and left the cache as it was)."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                self._cond.wait_for(lambda: self._closed, timeout=GATHER)
                if self._closed:
                    return
                batch, self._queue = list(dict.fromkeys(self._queue)), []
            try:
                self._fetch(batch)
            except Exception as exc:  # the run's final fetch tries again and reports
                log.debug(f"Fetching {len(batch)} output(s) ahead of the checkout failed: {exc}")
