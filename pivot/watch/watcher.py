"""File-system events through `watchfiles` (Rust `notify`: inotify, FSEvents, ...): one
thread watches folders for their own entries, another watches folders with everything
below them; each delivers the changed paths of a debounced burst as one set."""

from __future__ import annotations

import threading
from collections.abc import Callable

DEBOUNCE_MS = 1600  # a burst longer than this is delivered in several sets
STEP_MS = 50  # a burst ends after this long without a new event
READY_MS = 100  # how often an idle watcher comes back to Python (to say it is ready)
EDITOR_TEMP = (
    r"^4913$",  # vim's probe file
    r"\.pivot-(tmp|old)-",  # the folders a checkout builds beside an output
)


def _filter(root: str) -> Callable[[object, str], bool]:
    """watchfiles' default filter (editor swap and backup files, `__pycache__`, `.git`,
    ...) plus `.pivot` and the temp files above, applied to the path inside `root`."""
    import watchfiles

    base = watchfiles.DefaultFilter
    default = base(
        ignore_dirs=(*base.ignore_dirs, ".pivot"),
        ignore_entity_patterns=(*base.ignore_entity_patterns, *EDITOR_TEMP),
    )
    cut = len(root.rstrip("/")) + 1

    def keep(change: object, path: str) -> bool:
        return default(change, path[cut:] or ".")

    return keep


class _Thread:
    """One `watchfiles.watch` over `paths` on a daemon thread."""

    def __init__(
        self,
        root: str,
        paths: frozenset[str],
        recursive: bool,
        deliver: Callable[[set[str]], None],
        polling: bool = False,
    ) -> None:
        self.root = root
        self.paths = paths
        self.polling = polling
        self.error: Exception | None = None
        self.stop = threading.Event()  # stop now, dropping a burst being gathered
        self.retire = threading.Event()  # stop once what was seen is delivered
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(recursive, deliver), name="pivot-watch", daemon=True
        )
        self.thread.start()

    def _run(self, recursive: bool, deliver: Callable[[set[str]], None]) -> None:
        import watchfiles

        try:
            for changes in watchfiles.watch(
                *sorted(self.paths),
                watch_filter=_filter(self.root),
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self.stop,
                rust_timeout=READY_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
                recursive=recursive,
                ignore_permission_denied=True,
                force_polling=self.polling or None,
            ):
                self.ready.set()
                if changes:
                    deliver({path for _, path in changes})
                if self.retire.is_set():
                    return
        except (OSError, RuntimeError) as exc:
            # A folder went away before it was watched, or the system's limit of watches
            # was reached: an empty set asks to look at everything again.
            self.error = exc
            if not self.stop.is_set():
                deliver(set())
        finally:
            self.ready.set()

    def alive(self) -> bool:
        return self.thread.is_alive()


class Watcher:
    """The watched folders, changed as a whole; `close` stops watching."""

    def __init__(self, root: str, deliver: Callable[[set[str]], None]) -> None:
        self.root = root
        self.deliver = deliver
        self._flat: _Thread | None = None
        self._trees: _Thread | None = None

    def watch(self, flat: set[str], trees: set[str], again: set[str] = frozenset()) -> bool:
        """Watch `flat` folders (their entries) and `trees` (everything below them);
        returns whether anything changed. The new watches are in place on return, and the
        old ones stop only then, after delivering what they saw (an event may come twice,
        none is lost). Folders in
        `again` are watched anew even if they were already (they were replaced)."""
        changed = False
        for attr, paths, recursive in (("_flat", flat, False), ("_trees", trees, True)):
            current: _Thread | None = getattr(self, attr)
            wanted = frozenset(paths)
            alive = current is not None and current.alive()
            if alive and current.paths == wanted and not wanted & again:
                continue
            changed = True
            # Out of file-system watches (or another failure than a missing folder): the
            # library's own polling of the folders takes over.
            failed = current is not None and current.error is not None
            polling = failed and not isinstance(current.error, FileNotFoundError)
            polling = polling or (current is not None and current.polling)
            new = _Thread(self.root, wanted, recursive, self.deliver, polling) if wanted else None
            if new is not None:
                new.ready.wait()
            if current is not None:  # it delivers the burst it may be gathering first
                current.retire.set()
            setattr(self, attr, new)
        return changed

    @property
    def trees(self) -> bool:
        """Whether a second thread watches folders with everything below them."""
        return self._trees is not None

    def close(self) -> None:
        for thread in (self._flat, self._trees):
            if thread is not None:
                thread.stop.set()
        for thread in (self._flat, self._trees):
            if thread is not None:
                thread.thread.join(timeout=0.5)
        self._flat = self._trees = None
