"""`push`, `fetch` and `pull`: a progress bar while they move, then a summary line."""

from __future__ import annotations

import click

from pivot.cli import render
from pivot.cli.options import LINK_MODES, transfer_options
from pivot.errors import RemoteIncomplete
from pivot.services import transfer


def _with_bar(label: str, quiet: bool, move, *args, **kwargs) -> transfer.Moved:
    """Call the service `move` with a progress bar on stderr (unless `quiet`), closed
    however it ends."""
    bar = render.Bar(label, enabled=not quiet)
    try:
        return move(*args, progress=bar, **kwargs)
    finally:
        bar.close()


@click.command("push", short_help="Send outputs and run records to the remote.")
@transfer_options
def push(remote_name, jobs, as_json, all_pipelines, quiet, targets) -> None:
    """Send the outputs and run records of this pipeline and its upstreams (or TARGETS, or
    --all: every pipeline's, and every local run record) to the remote."""
    moved = _with_bar("push", quiet, transfer.push, targets, all_pipelines, remote_name, jobs)
    summary = moved.summary
    render.transfer(summary, as_json)
    if summary.missing:
        raise RemoteIncomplete(
            f"{len(summary.missing)} blob(s) named by lock files are neither in the local cache "
            f"nor on {moved.remote} (first: {summary.missing[0][:16]}); everything else was "
            f"pushed. Run `pivot run` (or `pivot pull` on the machine that has them) and push "
            f"again.",
            remote=moved.remote,
            missing=tuple(summary.missing),
        )


@click.command("fetch", short_help="Download outputs into the local cache.")
@transfer_options
def fetch(remote_name, jobs, as_json, all_pipelines, quiet, targets) -> None:
    """Download the outputs of this pipeline and its upstreams (or TARGETS, or --all) into
    the local cache."""
    moved = _with_bar("fetch", quiet, transfer.fetch, targets, all_pipelines, remote_name, jobs)
    summary = moved.summary
    render.transfer(summary, as_json)
    if summary.missing:
        raise RemoteIncomplete(
            f"{len(summary.missing)} blob(s) are not on remote {moved.remote} "
            f"(first: {summary.missing[0]}). Push them from a machine that has them.",
            remote=moved.remote,
            missing=tuple(summary.missing),
        )


@click.command("pull", short_help="Fetch outputs and check them out.")
@transfer_options
@click.option(
    "--link",
    type=click.Choice(LINK_MODES),
    default=None,
    help="How outputs are placed (default: the config's cache.link, else copy).",
)
@click.option(
    "-f", "--force", is_flag=True, help="Discard edits to outputs that exist nowhere else."
)
def pull(remote_name, jobs, as_json, all_pipelines, quiet, link, targets, force) -> None:
    """Fetch, then check out the outputs of this pipeline and its upstreams (or TARGETS, or
    --all) and the tracked data they read into the workspace. A file whose content is in
    neither a lock nor the cache is not overwritten unless --force."""
    moved = _with_bar(
        "pull",
        quiet,
        transfer.pull,
        targets,
        all_pipelines,
        remote_name,
        jobs,
        link_name=link,
        force=force,
    )
    extra = {"checked_out": moved.checked_out, "incomplete": moved.incomplete}
    render.transfer(moved.summary, as_json, extra)
    if moved.incomplete:
        raise RemoteIncomplete(
            f"{len(moved.incomplete)} output(s) could not be checked out because the remote "
            f"{moved.remote} lacks some of their blobs: {', '.join(moved.incomplete[:5])}"
            f"{' ...' if len(moved.incomplete) > 5 else ''}. Push them from a machine that "
            f"has them.",
            remote=moved.remote,
        )
