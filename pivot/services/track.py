"""The work behind `track` and `untrack`: raw data hashed into the cache and recorded
under `.pivot/tracked/`, or its record removed."""

from __future__ import annotations

import errno
import os
import pathlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pivot import _racy
from pivot.cache import tracked
from pivot.cache.state import settle, settled_limit
from pivot.cache.tracked import Tracked
from pivot.cache.workspace import Workspace, open_workspace
from pivot.discover.finder import Discovery
from pivot.errors import PivotError, UnsafePath
from pivot.project import first_overlap, safe_relpath
from pivot.services.ignored import GitIgnored

if TYPE_CHECKING:
    from pivot.cache.objects import StoredOutput
    from pivot.cache.state import Row


@dataclass
class TrackResult:
    """One path given to `track`: its record, and whether the record changed."""

    record: Tracked
    changed: bool


def track(paths: tuple[str, ...], cwd: pathlib.Path | None = None) -> list[TrackResult]:
    """Hash each path into the cache and write its record. Every path is checked before
    anything is stored or recorded."""
    ws = open_workspace(cwd)
    try:
        rels = [_checked(ws, p, cwd or pathlib.Path.cwd()) for p in paths]
        clash = first_overlap(rels)
        if clash is not None:
            raise PivotError(
                f"The paths {clash[0]!r} and {clash[1]!r} given to track overlap; track "
                f"either the folder or what it holds. Nothing was recorded."
            )
        records = tracked.load_all(ws.project)
        for rel in rels:
            _refuse_overlap(rel, records)
        discovery = Discovery(ws.project, ws.state)
        _refuse_outputs(discovery, rels)
        results = []
        with ws.project.exclusive("track"):
            for rel in rels:
                record = _store(ws, rel, records.get(rel))
                results.append(TrackResult(record, tracked.write(ws.project, record)))
            ws.state.commit()
            GitIgnored(ws.project, discovery, complete=True).update(rels)
        return results
    finally:
        ws.state.close()


def untrack(paths: tuple[str, ...], cwd: pathlib.Path | None = None) -> list[str]:
    """Remove the records of `paths` (their data stays in the workspace and the cache
    until `gc`); every path must be tracked."""
    ws = open_workspace(cwd)
    try:
        rels = []
        for path in paths:
            rel = ws.project.rel(pathlib.Path(cwd or pathlib.Path.cwd()) / path)
            if tracked.read(ws.project, rel) is None:
                raise PivotError(
                    f"{rel} is not tracked: there is no {tracked.FOLDER} record "
                    f"{tracked.shown(ws.project, tracked.record_file(ws.project, rel))}. "
                    f"Nothing was changed."
                )
            rels.append(rel)
        with ws.project.exclusive("untrack"):
            for rel in rels:
                tracked.remove(ws.project, rel)
            discovery = Discovery(ws.project, ws.state)  # no pipeline loaded
            GitIgnored(ws.project, discovery, complete=False).update([], dropped=rels)
        return rels
    finally:
        ws.state.close()


def _checked(ws: Workspace, path: str, cwd: pathlib.Path) -> str:
    """The project path of `path`, if it may be tracked."""
    rel = ws.project.rel(pathlib.Path(cwd) / path)
    try:
        safe_relpath(rel, "the path to track")
    except PivotError:
        raise PivotError(
            f"Cannot track {rel}: Pivot never tracks a path in .pivot/ or in a .git folder, "
            f"nor one where Python reads code unasked (site-packages, __pycache__). Nothing "
            f"was recorded."
        ) from None
    ws.project.write_path(rel, "the path to track")
    full = ws.project.root / rel
    if os.path.islink(full):
        raise PivotError(
            f"Cannot track {rel}: it is a symbolic link. Track the file or folder it points "
            f"to (inside the project). Nothing was recorded."
        )
    if not os.path.exists(full):
        raise PivotError(f"Cannot track {rel}: it does not exist. Nothing was recorded.")
    if not (os.path.isfile(full) or os.path.isdir(full)):
        raise PivotError(
            f"Cannot track {rel}: it is neither a file nor a folder. Nothing was recorded."
        )
    return rel


def _refuse_overlap(rel: str, records: dict[str, Tracked]) -> None:
    for other in records:
        if other == rel:
            continue
        if first_overlap([other, rel]) is not None:
            raise PivotError(
                f"Cannot track {rel}: it overlaps the tracked path {other} (one lies in the "
                f"other). Untrack {other} first, or track the folder alone. Nothing was "
                f"recorded."
            )


def _refuse_outputs(discovery: Discovery, rels: list[str]) -> None:
    """Refuse a path that is, holds or lies in an output of a stage (of every pipeline,
    loaded into `discovery`)."""
    outputs = {
        out.path: stage
        for loaded in discovery.load_all()
        for stage in loaded.stages.values()
        for out in stage.outs
    }
    for rel in rels:
        for out, stage in outputs.items():
            if first_overlap([out, rel]) is not None:
                what = "is" if out == rel else "overlaps"
                raise PivotError(
                    f"Cannot track {rel}: it {what} {out}, an output of stage {stage.id} "
                    f"({stage.source}). Pivot already caches outputs; track only raw data "
                    f"no stage writes. Nothing was recorded."
                )


def _store(ws: Workspace, rel: str, before: Tracked | None) -> Tracked:
    """Hash `rel` into the cache; when it was tracked before and still has the content
    the cache holds, nothing is copied."""
    if before is not None:
        current = ws.hasher.hash_path(rel)
        if current is not None and not ws.cache.missing(current.hash, current.kind):
            return Tracked(rel, current.hash, current.size, current.kind)
    # The racy marker before the files are read: a file changed at its time or later
    # (the same tick of the file system's clock) is recorded smudged (`state.settle`).
    wall_ns = time.time_ns()
    made = _racy.made_after_writes(str(ws.project.tmp_dir), 0)
    stored, rows = _add_pinned(ws, rel)
    ws.state.record_rows(settle(rows, settled_limit(made, wall_ns, str(ws.project.root / rel))))
    return Tracked(rel, stored.hash, stored.size, stored.kind)


def _add_pinned(ws: Workspace, rel: str) -> tuple[StoredOutput, list[Row]]:
    """Store `rel` into the cache as `_checked` saw it: read through its folder pinned
    (`Project.pinned_folder`) and the path itself opened without following a link, so a
    symbolic link swapped in since the check (for it or a folder above it) is refused,
    never followed to a file outside the project that would be stored and pushed."""
    what = "the path to track"
    full = ws.project.root / rel
    with ws.project.pinned_folder(rel, what) as folder:
        try:
            fd = os.open(folder / full.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise UnsafePath(
                f"Refusing {what} {rel!r}: it became a symbolic link while Pivot was "
                f"tracking it. Pivot never follows a link there; check what changed it and "
                f"track again. Nothing was recorded.",
                path=rel,
            ) from None
        try:
            proc = pathlib.Path(f"/proc/self/fd/{fd}")
            pinned = proc if os.path.isdir("/proc/self/fd") else full
            try:
                return ws.cache.add_output(pinned, ws.project.root, packed=True, rel=rel)
            except PivotError as exc:
                if pinned == full:
                    raise
                raise exc.reworded(str(exc).replace(str(pinned), str(full))) from exc.__cause__
        finally:
            os.close(fd)
