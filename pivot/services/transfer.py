"""The work behind `push`, `fetch` and `pull`: the scope's lock files moved to or from a
remote."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pivot import config
from pivot._gcpause import collector_paused
from pivot.cache.checkout import LinkMode
from pivot.cache.edits import refuse_unsaved_edits
from pivot.cache.runs import RunRecords
from pivot.cache.workspace import open_workspace, workspace_of
from pivot.remote import transfer
from pivot.run.remote_view import open_configured
from pivot.services.ignored import GitIgnored
from pivot.services.scope import check_disjoint_data, command_locks, loaded_data_in_scope

if TYPE_CHECKING:
    from pivot.remote.transfer import Progress, TransferSummary


@dataclass
class Moved:
    """What a transfer did, on which remote (its display name); pull also says which
    outputs it checked out and which it could not (the remote lacks blobs of them)."""

    summary: TransferSummary
    remote: str
    checked_out: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def push(
    targets: tuple[str, ...],
    all_pipelines: bool,
    remote_name: str | None,
    jobs: int | None,
    progress: Progress | None = None,
) -> Moved:
    """Send the scope's outputs and run records (with --all, also every local run record)."""
    project, locks, records = command_locks(targets, all_pipelines)
    target = open_configured(project, remote_name)
    run_keys = RunRecords(project.cache_dir).keys() if all_pipelines else []
    extra = transfer.lock_outputs(records)
    summary = transfer.push_locks(project, target, locks, run_keys, jobs, progress, extra)
    return Moved(summary, target.display)


def fetch(
    targets: tuple[str, ...],
    all_pipelines: bool,
    remote_name: str | None,
    jobs: int | None,
    progress: Progress | None = None,
) -> Moved:
    """Bring the scope's outputs and tracked data into the local cache."""
    project, locks, records = command_locks(targets, all_pipelines)
    target = open_configured(project, remote_name)
    with project.exclusive("fetch"):
        summary = transfer.fetch_locks(project, target, [*locks, *records], jobs, progress)
    return Moved(summary, target.display)


def pull(
    targets: tuple[str, ...],
    all_pipelines: bool,
    remote_name: str | None,
    jobs: int | None,
    progress: Progress | None = None,
    link_name: str | None = None,
    force: bool = False,
) -> Moved:
    """Fetch the scope's outputs and tracked data and place each complete one in the
    workspace; edits that exist nowhere else are refused first, unless `force`. Like
    `checkout`, lists what it placed in git's ignore files and drops Pivot's lines for
    paths nothing owns."""
    ws = open_workspace()
    try:
        found = loaded_data_in_scope(ws, targets, all_pipelines)
    finally:
        ws.state.close()
    project = ws.project
    locks, records = found.data
    check_disjoint_data(locks, records)
    if not force:
        ws = workspace_of(project)
        try:
            refuse_unsaved_edits(
                ws, [item for lock in [*locks, *records] for item in lock.outs.items()]
            )
        finally:
            ws.state.close()
    target = open_configured(project, remote_name)
    link = LinkMode(config.link_mode(project, link_name))
    with project.exclusive("pull"):
        ignored = GitIgnored(project, found.discovery, found.complete)
        # Paused, then what is left frozen (a command, not a long-lived process): the first
        # collection after a pull of 100,000 files walked what it left (50 ms).
        with collector_paused():
            result = transfer.pull_locks(project, target, [*locks, *records], jobs, progress, link)
        ignored.update(result.checked_out)
    return Moved(result.summary, target.display, result.checked_out, result.incomplete)
