"""The local pieces every command needs, opened together: the project, its state db,
hasher, local cache and run records; and `place_output`, the one way run, checkout and
pull put a cached output in the workspace (the stat cache learns every placed file)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot import _racy
from pivot.cache import linked
from pivot.cache.checkout import LinkMode, Placed, checkout
from pivot.cache.hashing import DIR, Hasher
from pivot.cache.objects import LocalCache
from pivot.cache.runs import RunRecords
from pivot.cache.snapshot import SnapshotHasher
from pivot.cache.state import StateDB, settle, settled_limit, stat_row
from pivot.errors import DamagedBlob, PivotError
from pivot.project import Project

if TYPE_CHECKING:
    from pivot.cache.streamed import StreamedTree


class Workspace(NamedTuple):
    """One project opened for a command; `state.close()` when done."""

    project: Project
    state: StateDB
    hasher: Hasher
    cache: LocalCache
    runs: RunRecords

    def place_output(
        self,
        path: str,
        out: dict[str, Any],
        link: LinkMode,
        what: str,
        refetch: Callable[[str, str], object] | None = None,
    ) -> bool:
        """Check a cached output out at its project path, unless it is already there;
        returns whether anything was placed. The stat cache learns the placed files.
        `what` names the output in the error if its path is refused (`write_path`). A
        damaged cache object is set aside and, with `refetch`, fetched again (see
        `checkout.checkout`)."""
        dest = self.project.write_path(path, what, make_parents=True)
        current = self.hasher.hash_path(path)
        if current is not None and current.hash == out["hash"]:
            return False
        with self.project.pinned_folder(path, what) as folder:
            # Written into the folder checked above, even if a link replaced it since
            # (and its leftovers removed there: `checkout` does it first).
            pinned = folder / dest.name
            try:
                placed = checkout(self.cache, out["hash"], out["kind"], pinned, link, refetch)
            except PivotError as exc:
                raise _named(exc, pinned, dest) from exc.__cause__
        self.record_placed(path, placed, link)
        return True

    def stream_output(
        self, path: str, out: dict[str, Any], link: LinkMode, what: str, min_files: int = 0
    ) -> StreamedOutput | None:
        """The checkout of the tree output `out` at `path` built while its blobs are
        fetched (see `streamed.StreamedTree`), when nothing is at `path` yet and the
        cache holds its manifest, of at least `min_files` files; else None
        (`place_output` then checks what is there and replaces it). Its folder is pinned
        until the stream is finished or discarded."""
        if out["kind"] != DIR or not self.cache.has(out["hash"]):
            return None
        dest = self.project.write_path(path, what, make_parents=True)
        if os.path.lexists(dest):
            return None
        try:
            entries = self.cache.tree(out["hash"])
        except DamagedBlob:  # set aside: `place_output` fetches it again
            return None
        if len(entries) < min_files:
            return None
        # Imported only here: the streamed checkout (and its subprocess) is a pull's, and
        # every command opens a workspace.
        from pivot.cache.streamed import StreamedTree

        pinned = contextlib.ExitStack()
        try:
            folder = pinned.enter_context(self.project.pinned_folder(path, what))
            pinned_dest = folder / dest.name
            tree = StreamedTree(
                self.cache,
                out["hash"],
                entries,
                pinned_dest,
                link,
                f"{path}/",
                self.state.staging(),
            )
        except BaseException:
            pinned.close()
            raise
        return StreamedOutput(self, path, link, tree, pinned, dest)

    def record_placed(self, path: str, placed: list[Placed], link: LinkMode) -> None:
        """Teach the stat cache the files of an output just placed at `path`: settled
        those changed before a racy marker made once they are written (`settle_mark`),
        the others smudged, for the next command to hash."""
        base = os.fspath(self.project.root)
        made, wall_ns = self.settle_mark()
        rows = []
        for inner, digest, st in placed:
            rel = f"{path}/{inner}" if inner else path
            st = st or os.stat(os.path.join(base, rel))
            rows.append(stat_row(rel, st, digest, _racy.settled(made, st, wall_ns)))
            if link is not LinkMode.COPY:
                linked.remember(self.state, self.cache, digest, made, wall_ns)
        self.state.record_rows(rows)  # one hand-over, not a locked call per file

    def settle_mark(self) -> tuple[tuple[int, int] | None, int]:
        """A racy marker made now in the tmp folder (`_racy.made_after_writes`, without
        waiting) and the wall clock's time before it, judging files Pivot placed: one
        changed before the marker keeps its stat key through any later change (that sets
        a ctime at the marker's or later), while one of the marker's own tick may not."""
        wall_ns = time.time_ns()
        return _racy.made_after_writes(str(self.project.tmp_dir), 0), wall_ns


class StreamedOutput(NamedTuple):
    """A tree output being checked out while it is fetched (`Workspace.stream_output`):
    `offer` verified blobs, then `finish` (after the fetch is committed) or `discard`."""

    ws: Workspace
    path: str
    link: LinkMode
    tree: StreamedTree
    pinned: contextlib.ExitStack
    dest: pathlib.Path

    def offer(self, blobs: list[tuple[str, bytes]]) -> None:
        self.tree.offer(blobs)

    def finish(self) -> None:
        """Swap the complete tree in and record its stat rows; on error nothing moved."""
        with self.pinned:
            try:
                rows, placed = self.tree.finish()
            except PivotError as exc:
                raise _named(exc, self.tree.dest, self.dest) from exc.__cause__
        # Files written from fetched bytes (copies); their rows were staged as they came.
        made, wall_ns = self.ws.settle_mark()
        limit = settled_limit(made, wall_ns, str(self.dest))
        if self.tree.staged is None:
            self.ws.state.record_rows(settle(rows, limit))
        else:
            self.ws.state.keep(self.tree.staged, rows, limit)
        self.ws.record_placed(self.path, placed, self.link)

    def discard(self) -> None:
        with self.pinned:
            self.tree.discard()


def _named(exc: PivotError, pinned: pathlib.Path, dest: pathlib.Path) -> PivotError:
    """`exc` naming the output's project path, not the descriptor path it was written at."""
    error = exc.reworded(str(exc).replace(str(pinned), str(dest)))
    if getattr(error, "path", None) == pinned:
        error.path = dest
    return error


def open_workspace(start: pathlib.Path | None = None) -> Workspace:
    """The workspace of the project found from `start` (default: the cwd)."""
    return workspace_of(Project.discover(start))


def workspace_of(project: Project) -> Workspace:
    """The workspace of an already found project."""
    state = StateDB(project.state_path, must_save=lambda: bool(project.changed_by))
    return Workspace(
        project=project,
        state=state,
        hasher=SnapshotHasher(project.root, state, marker_dir=str(project.tmp_dir)),
        cache=LocalCache(project.cache_dir, project.tmp_dir),
        runs=RunRecords(project.cache_dir),
    )
