"""A tree checkout that runs while its blobs are still being fetched: each blob is written
into the hidden new tree as soon as the fetch has verified it, by a thread of its own, so
that creating the files (kernel work, done without the interpreter lock) overlaps the
download and verification of the rest. The tree is swapped into place only once complete
and after the fetched blobs are committed to the cache (`finish`); until then `dest` is
untouched, and a failed or killed pull leaves only the hidden sibling, which the next
checkout of `dest` removes (`checkout.remove_leftovers`). Why: docs/benchmarks.md, "the
100,000-file pull: fifth round"."""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

from pivot.cache.checkout import LinkMode, Placed, TreeBuild, _Mismatch, remove_leftovers
from pivot.errors import writing

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Iterable

    from pivot.cache.hashing import TreeEntry
    from pivot.cache.objects import LocalCache

# Verified content waiting for the writer thread, in bytes: past this, `offer` waits (the
# fetch slows to the pace of file creation rather than holding a whole output in memory).
PENDING_MAX = 256 << 20


class StreamedTree:
    """The checkout of the tree output `digest` (its manifest `entries`) at `dest`, which
    does not exist yet, built while its blobs arrive. `offer` blobs verified against their
    hashes (from any thread); `finish` once every fetch is done and committed, or
    `discard`."""

    def __init__(
        self,
        cache: LocalCache,
        digest: str,
        entries: list[TreeEntry],
        dest: pathlib.Path,
        mode: LinkMode,
    ) -> None:
        self.cache = cache
        self.dest = dest
        self.entries = entries
        remove_leftovers(cache, dest)
        self._build = TreeBuild(cache, digest, entries, dest, mode)
        self._waiting: dict[str, list[TreeEntry]] = {}
        for entry in entries:
            self._waiting.setdefault(entry.hash, []).append(entry)
        self._queue: collections.deque[tuple[list[tuple[list[TreeEntry], bytes]], int]] = (
            collections.deque()
        )
        self._pending = 0
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name="pivot-streamed-checkout", daemon=True
        )
        self._thread.start()

    def offer(self, blobs: Iterable[tuple[str, bytes]]) -> None:
        """Write the entries holding these blobs, each verified against its hash by the
        caller; blobs of no waiting entry are ignored. Waits while much is pending."""
        with self._cond:
            if self._stopped():
                return
            waiting = self._waiting
            take = [(found, data) for digest, data in blobs if (found := waiting.pop(digest, None))]
            if not take:
                return
            size = sum(len(data) for _, data in take)
            while self._pending + size > PENDING_MAX and self._pending and not self._stopped():
                self._cond.wait()
            if self._stopped():
                return
            self._queue.append((take, size))
            self._pending += size
            self._cond.notify_all()

    def _run(self) -> None:
        write = self._build.write
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                take, size = self._queue.popleft()
            try:
                for found, data in take:
                    for entry in found:
                        write(entry, data)
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._queue.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._pending -= size
                self._cond.notify_all()

    def _stopped(self) -> bool:
        return self._closed or self._error is not None

    def _stop(self, drop: bool = False) -> None:
        """Let the writer finish what is queued (or `drop` it), then wait for it."""
        with self._cond:
            self._closed = True
            if drop:
                self._queue.clear()
            self._cond.notify_all()
        self._thread.join()

    def finish(self) -> list[Placed]:
        """Wait for the writer, place the entries no offered blob covered from the cache
        (verified there), then swap the tree into place; returns a `Placed` per file. On
        any error nothing is placed and the hidden tree is removed."""
        try:
            self._stop()
            with writing(self.dest):
                if self._error is not None:
                    raise self._error
                rest = [entry for found in self._waiting.values() for entry in found]
                self._build.place(rest)
                self._build.swap()
        except _Mismatch as exc:  # a cache object set aside: DamagedBlob
            self._build.discard()
            raise self.cache.damaged(exc.digest, self.dest) from None
        except BaseException:
            self._build.discard()
            raise
        stats = self._build.stats
        return [(e.relpath, e.hash, stats.get(e.relpath)) for e in self.entries]

    def discard(self) -> None:
        """Stop the writer and remove the hidden tree; `dest` stays as it was."""
        self._stop(drop=True)
        self._build.discard()
