"""The stages of a run that may start: those whose upstreams all settled, in topological
order, kept up to date as stages settle (each stage is looked at when an upstream settles,
not once per settled stage: a 2,000-stage run does not rescan 2,000 waiting stages after
each one)."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pivot.discover.graph import Graph


class ReadyQueue:
    """Waiting stages by topological rank; `settled` tells it which stages finished (and
    whether they failed), `pop` hands out a stage once all its upstreams settled, or as
    soon as one failed (the scheduler then blocks it)."""

    def __init__(self, graph: Graph, order: list[str], waiting: Iterable[str], done: set[str]):
        self._rank = {sid: rank for rank, sid in enumerate(order)}
        self._down = graph.downstream()
        self._left: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._waiting: set[str] = set()
        for sid in waiting:
            self._waiting.add(sid)
            left = len({u for u in graph.upstream[sid].values() if u not in done})
            self._left[sid] = left
            if not left:
                self._heap.append((self._rank[sid], sid))
        heapq.heapify(self._heap)

    def settled(self, sid: str, failed: bool) -> None:
        """Stage `sid` finished (any status); a failure makes its downstreams poppable."""
        self._waiting.discard(sid)
        for child in self._down.get(sid, ()):
            if child not in self._waiting:
                continue
            self._left[child] -= 1
            if failed or not self._left[child]:
                heapq.heappush(self._heap, (self._rank[child], child))

    def pop(self) -> str | None:
        """The first waiting stage (topological order) that may be decided now, or None."""
        while self._heap:
            _, sid = heapq.heappop(self._heap)
            if sid in self._waiting:
                self._waiting.discard(sid)
                return sid
        return None

    def put_back(self, sids: Iterable[str]) -> None:
        """Stages popped but not started (no free slot): they come first next time."""
        for sid in sids:
            self._waiting.add(sid)
            heapq.heappush(self._heap, (self._rank[sid], sid))
