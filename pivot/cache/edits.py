"""Edits that exist nowhere else: workspace content of an output or tracked path that is
about to be replaced and that neither the record being placed nor the cache holds."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pivot.cache.hashing import DIR
from pivot.errors import PivotError

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace


class UnsavedEdits(PivotError):
    """Placing outputs would discard workspace content stored nowhere else."""

    def __init__(self, paths: list[str]) -> None:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        super().__init__(
            f"Refusing to overwrite {len(paths)} file(s) whose content is in neither the lock "
            f"files nor the cache (edits that exist nowhere else): {shown}. Nothing was "
            f"replaced. Move them away (or record them), or run again with --force to discard "
            f"them."
        )
        self.paths = paths


def unsaved_edits(ws: Workspace, items: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """The files among `items` ((path, recorded output) about to be placed) whose current
    content differs from the output and is not in the local cache; a folder's files are
    named one by one."""
    found: list[str] = []
    for path, out in items:
        try:  # never read through a refused path: placing it fails with its own error
            full = ws.project.write_path(path, "the output")
        except PivotError:
            continue
        if not os.path.lexists(full):
            continue
        if os.path.islink(full) or not (full.is_dir() or full.is_file()):
            continue  # a checkout renames over it; nothing of the user's is read through it
        current = ws.hasher.hash_path(path)
        if current is None or current.hash == out["hash"] or ws.cache.has(current.hash):
            continue
        if current.kind != DIR:
            found.append(path)
            continue
        recorded = _recorded_files(ws, out)
        for entry in ws.hasher.tree_entries(path):
            if recorded.get(entry.relpath) != entry.hash and not ws.cache.has(entry.hash):
                found.append(f"{path}/{entry.relpath}")
    return found


def _recorded_files(ws: Workspace, out: dict[str, Any]) -> dict[str, str]:
    """The files of a recorded directory output, when its manifest is in the cache."""
    if out["kind"] != DIR or not ws.cache.has(out["hash"]):
        return {}
    try:
        return {e.relpath: e.hash for e in ws.cache.tree(out["hash"])}
    except PivotError:
        return {}


def refuse_unsaved_edits(ws: Workspace, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Raise UnsavedEdits naming every file among `items` that placing would discard."""
    edits = unsaved_edits(ws, items)
    if edits:
        raise UnsavedEdits(edits)
