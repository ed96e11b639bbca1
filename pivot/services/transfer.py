"""The work behind `push`, `fetch` and `pull`: the scope's lock files moved to or from a
remote."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pivot import config
from pivot.cache.checkout import LinkMode
from pivot.cache.runs import RunRecords
from pivot.remote import transfer
from pivot.run.lockfile import check_disjoint
from pivot.run.remote_view import open_configured
from pivot.services.scope import command_locks

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
    project, locks = command_locks(targets, all_pipelines)
    target = open_configured(project, remote_name)
    run_keys = RunRecords(project.cache_dir).keys() if all_pipelines else []
    summary = transfer.push_locks(project, target, locks, run_keys, jobs, progress)
    return Moved(summary, target.display)


def fetch(
    targets: tuple[str, ...],
    all_pipelines: bool,
    remote_name: str | None,
    jobs: int | None,
    progress: Progress | None = None,
) -> Moved:
    """Bring the scope's outputs into the local cache."""
    project, locks = command_locks(targets, all_pipelines)
    target = open_configured(project, remote_name)
    with project.exclusive("fetch"):
        summary = transfer.fetch_locks(project, target, locks, jobs, progress)
    return Moved(summary, target.display)


def pull(
    targets: tuple[str, ...],
    all_pipelines: bool,
    remote_name: str | None,
    jobs: int | None,
    progress: Progress | None = None,
    link_name: str | None = None,
) -> Moved:
    """Fetch the scope's outputs and place each complete one in the workspace."""
    project, locks = command_locks(targets, all_pipelines)
    check_disjoint(locks)
    target = open_configured(project, remote_name)
    link = LinkMode(config.link_mode(project, link_name))
    with project.exclusive("pull"):
        result = transfer.pull_locks(project, target, locks, jobs, progress, link)
    return Moved(result.summary, target.display, result.checked_out, result.incomplete)
