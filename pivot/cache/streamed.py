"""A tree checkout that runs while its blobs are still being fetched: each blob is written
into the hidden new tree as soon as the fetch has verified it, by a child process of its
own (`tree_writer`, fed by a thread of this one), so that creating the files overlaps the
download and verification of the rest. The tree is swapped into place only once complete
and after the fetched blobs are committed to the cache (`finish`); until then `dest` is
untouched, and a failed or killed pull leaves only the hidden sibling, which the next
checkout of `dest` removes (`checkout.remove_leftovers`). Why: docs/benchmarks.md, "the
100,000-file pull: fifth round"."""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from pivot.cache.checkout import LinkMode, Mismatch, Placed, TreeBuild, remove_leftovers
from pivot.cache.state import Row, StagedRows
from pivot.cache.tree_writer import FRAME, HELLO, REPLY
from pivot.errors import writing

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable, Iterable

    from pivot.cache.hashing import TreeEntry
    from pivot.cache.objects import LocalCache

# Verified content waiting for the writer thread, in bytes: past this, `offer` waits (the
# fetch slows to the pace of file creation rather than holding a whole output in memory).
PENDING_MAX = 256 << 20
# While the child still writes, the rows of its replies are staged in the state db's
# connection at this interval (seconds), so that few are left for after its last file.
WAIT_STEP = 0.05


class StreamedTree:
    """The checkout of the tree output `digest` (its manifest `entries`) at `dest`, which
    does not exist yet, built while its blobs arrive. `offer` blobs verified against their
    hashes (from any thread); `finish` once every fetch is done and committed, or
    `discard`. The stat-cache rows of the files the child writes are made as its replies
    arrive, keyed `prefix + relpath`, and with `staged`, staged there while the child
    still writes (the caller keeps or drops them). If the child cannot be started,
    nothing is written before `finish`, which then places every file from the cache."""

    def __init__(
        self,
        cache: LocalCache,
        digest: str,
        entries: list[TreeEntry],
        dest: pathlib.Path,
        mode: LinkMode,
        prefix: str = "",
        staged: StagedRows | None = None,
    ) -> None:
        self.cache = cache
        self.staged = staged
        self.dest = dest
        self.entries = entries
        self.prefix = prefix
        remove_leftovers(cache, dest)
        self._build = TreeBuild(cache, digest, entries, dest, mode)
        self._waiting: dict[str, list[TreeEntry]] = {}
        for entry in entries:
            self._waiting.setdefault(entry.hash, []).append(entry)
        self._queue: collections.deque[tuple[list[tuple[list[TreeEntry], bytes]], int]] = (
            collections.deque()
        )
        self._sent: list[TreeEntry] = []  # in the order the child replies
        self._rows: list[Row] = []  # one per reply, in the same order
        self._staged_rows = 0  # how many of them are in `staged`
        self._failed: OSError | None = None
        self._pending = 0
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._child = _Child.start(self._build.folder_fd, self._replied)
        self._thread = threading.Thread(
            target=self._run, name="pivot-streamed-checkout", daemon=True
        )
        self._thread.start()

    def offer(self, blobs: Iterable[tuple[str, bytes]]) -> None:
        """Write the entries holding these blobs, each verified against its hash by the
        caller; blobs of no waiting entry are ignored. Waits while much is pending."""
        with self._cond:
            if self._stopped() or self._child is None:
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
        """Frame what is queued and send it to the child (a full pipe waits for it)."""
        child = self._child
        umask = self._build.umask
        pack = FRAME.pack
        sent = self._sent
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                take, size = self._queue.popleft()
            try:
                parts: list[bytes] = []
                for found, data in take:
                    for entry in found:
                        if len(data) != entry.size:
                            raise self._build.wrong_size(entry, len(data))
                        name = os.fsencode(entry.relpath)
                        mode = entry.mode
                        parts += (pack(len(name), len(data), mode, bool(mode & umask)), name, data)
                        sent.append(entry)  # before the child can reply to it
                if child is not None:
                    child.send(b"".join(parts))
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._queue.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._pending -= size
                self._cond.notify_all()

    def _replied(self, records: memoryview) -> None:
        """Turn the child's replies (whole records) into stat-cache rows, or its failure."""
        sent, rows, prefix = self._sent, self._rows, self.prefix
        i = len(rows)
        for size, mtime, ino, ctime in REPLY.iter_unpack(records):
            entry = sent[i]
            if size < 0:
                code = mtime or errno.EIO
                self._failed = OSError(code, os.strerror(code), str(self.dest / entry.relpath))
                return
            rows.append((prefix + entry.relpath, size, mtime, ino, ctime, entry.hash))
            i += 1

    def _stopped(self) -> bool:
        return self._closed or self._error is not None

    def _stop(self, drop: bool = False) -> None:
        """Let the feeding thread send what is queued (or `drop` it), then wait for it,
        staging the rows of the child's replies meanwhile."""
        with self._cond:
            self._closed = True
            if drop:
                self._queue.clear()
            self._cond.notify_all()
        while self._thread.is_alive():
            self._thread.join(WAIT_STEP)
            if not drop:
                self._stage()

    def _unwritten(self) -> list[TreeEntry]:
        """Wait for the child to create what it was sent; returns the sent entries it did
        not write (all of them if it never started)."""
        if self._child is None or not self._child.finish(self._stage):
            return self._sent
        if self._failed is not None:
            raise self._failed
        if len(self._rows) < len(self._sent):
            raise OSError(
                errno.EIO,
                f"the process creating its files stopped early (exit status "
                f"{self._child.status}; {len(self._rows)} of {len(self._sent)} written)",
                str(self.dest),
            )
        return []

    def _stage(self) -> None:
        """Stage the rows made since the last call."""
        if self.staged is not None:
            done, self._staged_rows = self._staged_rows, len(self._rows)
            self.staged.add(self._rows[done : self._staged_rows])

    def finish(self) -> tuple[list[Row], list[Placed]]:
        """Wait for the writer, place the entries it did not write from the cache
        (verified there), then swap the tree into place; returns the stat-cache rows of
        the files the child wrote (all staged in `staged`) and a `Placed` per other file.
        On any error nothing is placed, the hidden tree is removed and `staged` dropped."""
        try:
            self._stop()
            with writing(self.dest):
                if self._error is not None:
                    raise self._error
                rest = self._unwritten()
                self._stage()
                rest += [entry for found in self._waiting.values() for entry in found]
                self._build.place(rest)
                self._build.swap()
        except Mismatch as exc:  # a cache object set aside: DamagedBlob
            self._build.discard()
            self._drop_staged()
            raise self.cache.damaged(exc.digest, self.dest) from None
        except BaseException:
            self._kill()
            self._build.discard()
            self._drop_staged()
            raise
        stats = self._build.stats
        return self._rows, [(e.relpath, e.hash, stats.get(e.relpath)) for e in rest]

    def discard(self) -> None:
        """Stop the writer and remove the hidden tree; `dest` stays as it was."""
        self._kill()  # first: a feeding thread waiting on a full pipe is released
        self._stop(drop=True)
        self._build.discard()
        self._drop_staged()

    def _drop_staged(self) -> None:
        if self.staged is not None:
            self.staged.drop()

    def _kill(self) -> None:
        if self._child is not None:
            self._child.kill()


class _Child:
    """The `tree_writer` process creating a streamed tree's files in a folder, and a
    thread handing its replies, in whole records, to `replied`."""

    def __init__(
        self, proc: subprocess.Popen, replies: int, replied: Callable[[memoryview], None]
    ) -> None:
        self.proc = proc
        self.replies = replies  # the read end of the reply pipe
        self.replied: Callable[[memoryview], None] | None = replied
        self.started = False
        self.status: int | None = None
        self._reader = threading.Thread(
            target=self._read, name="pivot-streamed-replies", daemon=True
        )
        self._reader.start()

    @classmethod
    def start(cls, folder_fd: int, replied: Callable[[memoryview], None]) -> _Child | None:
        """The child writing into `folder_fd`, or None if it cannot be started."""
        # Replies come on a pipe of their own, not stdout: nothing else the interpreter
        # may print (a site hook, a warning) can be taken for one.
        # -P: no folder of the project (the working directory) on the child's import path.
        reply_read, reply_write = os.pipe()
        args = [sys.executable, "-P", "-m", "pivot.cache.tree_writer"]
        try:
            proc = subprocess.Popen(
                [*args, str(folder_fd), str(reply_write)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(folder_fd, reply_write),
            )
        except OSError:
            os.close(reply_read)
            return None
        finally:
            os.close(reply_write)
        return cls(proc, reply_read, replied)

    def _read(self) -> None:
        fd = self.replies
        replied = self.replied
        assert replied is not None  # dropped only once this thread is done
        buf = bytearray()
        while chunk := os.read(fd, 1 << 16):
            buf += chunk
            if not self.started:
                if len(buf) < len(HELLO):
                    continue
                if buf[: len(HELLO)] != HELLO:
                    return  # not the writer (it failed to start): `finish` says so
                self.started = True
                del buf[: len(HELLO)]
            whole = len(buf) - len(buf) % REPLY.size
            if whole:
                replied(memoryview(bytes(buf[:whole])))
                del buf[:whole]

    def send(self, data: bytes) -> None:
        """Send framed files; a child that stopped (an error it replied) is not fed."""
        # A broken pipe: its reply says why (or `finish` finds it stopped early).
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(data)  # type: ignore[union-attr]

    def finish(self, meanwhile: Callable[[], None]) -> bool:
        """End its input, wait for it and for its replies, calling `meanwhile` every
        WAIT_STEP seconds until it exits; returns whether it started."""
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        while self.status is None:
            try:
                self.status = self.proc.wait(WAIT_STEP)
            except subprocess.TimeoutExpired:
                meanwhile()
        self._done()
        return self.started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait()
        self._done()

    def _done(self) -> None:
        """After the child exited: its replies all handed over, the pipe closed, and the
        callback dropped (it refers back to the tree: no cycle kept to the collector)."""
        if self.replied is None:  # done already
            return
        self._reader.join()
        os.close(self.replies)
        self.replied = None
