"""Outputs edited in the workspace that a restore will replace, and the stages that read
them: what `status` and `run --dry-run` say about a stage whose lock matches only because
its upstream's recorded output stands in for the edited one."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot.cache.edits import unsaved_edits
from pivot.errors import PivotError
from pivot.project import is_utf8
from pivot.run.plan import PENDING, RESTORE, SKIP

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.discover.graph import Graph
    from pivot.run.plan import Decision

# `status`'s action for a stage whose lock matches the outputs its upstream will restore,
# while the workspace holds an edit of one of them: up to date only once they are restored.
WAITS = "waits"


class EditedOutputs(NamedTuple):
    """`unsaved`: per restoring stage, its edited files that exist nowhere else (a run
    refuses to overwrite them unless forced); `readers`: per stage reading an edited
    output, (dep, the upstream that restores it)."""

    unsaved: dict[str, list[str]]
    readers: dict[str, list[tuple[str, str]]]


def edited_outputs(ws: Workspace, graph: Graph, decisions: dict[str, Decision]) -> EditedOutputs:
    """The edits restores would replace (a restore checked out because an output of a
    stage whose lock still matches was modified), and which stages read them. Costs
    nothing when no stage restores."""
    restoring = {
        sid
        for sid, d in decisions.items()
        if d.action == RESTORE and d.materialize and d.matches_lock
    }
    unsaved: dict[str, list[str]] = {}
    readers: dict[str, list[tuple[str, str]]] = {}
    if not restoring:
        return EditedOutputs(unsaved, readers)
    edited: set[str] = set()  # the restoring stages with an output edited in place
    for sid in sorted(restoring):
        outs = decisions[sid].outs
        changed = [(p, o) for p, o in sorted(outs.items()) if _differs(ws, p, o["hash"])]
        if changed:
            edited.add(sid)
            found = unsaved_edits(ws, changed)
            if found:
                unsaved[sid] = found
    for sid, d in decisions.items():
        if d.action == PENDING:
            continue
        for dep, up in sorted(graph.upstream[sid].items()):
            recorded = d.deps.get(dep)
            if up in edited and recorded is not None and _differs(ws, dep, recorded):
                readers.setdefault(sid, []).append((dep, up))
    return EditedOutputs(unsaved, readers)


def _differs(ws: Workspace, path: str, recorded: str) -> bool:
    """Whether `path` is in the workspace with content other than `recorded` (a path
    refused for reading is left to the command that places it)."""
    try:
        found = ws.hasher.hash_path(path)
    except PivotError:
        return False
    return found is not None and found.hash != recorded


def _printable(path: str) -> str:
    """`path` as UTF-8 text: a name that is not (its bytes carried as lone surrogates)
    with those bytes shown as `\\xe9`."""
    return path if is_utf8(path) else os.fsencode(path).decode("utf-8", "backslashreplace")


def annotate(row: dict[str, Any], decision: Decision, edits: EditedOutputs) -> None:
    """Say on a `status` or `run --dry-run` row what edited outputs mean for its stage: a
    restore that a run refuses (reason, and `unsaved_edits`), or a stage that reads an
    edited output (reason, and `edited_deps`), whose action becomes `waits` where it would
    read `up to date`: it is up to date only once its upstream restored the output."""
    sid = decision.stage.id
    if sid in edits.unsaved:
        paths = edits.unsaved[sid]
        shown = ", ".join(map(_printable, paths[:5]))
        shown += f" and {len(paths) - 5} more" if len(paths) > 5 else ""
        row["reasons"].append(
            f"the edits to {shown} exist nowhere else: a run refuses to overwrite them "
            f"unless forced"
        )
        row["unsaved_edits"] = paths
    read = edits.readers.get(sid)
    if not read:
        return
    if decision.action == SKIP or decision.kept_up_to_date:
        row["action"], row["reasons"] = WAITS, []
        row.pop("kept", None)
    row["reasons"] += [
        f"dep {dep} was edited in the workspace; {up} restores it first" for dep, up in read
    ]
    row["edited_deps"] = [dep for dep, _ in read]
