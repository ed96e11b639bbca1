"""`track` and `untrack`: raw data recorded under `.pivot/tracked/`."""

from __future__ import annotations

import click

from pivot.services import track as tracking


@click.command(short_help="Record raw data (files or folders) to share it.")
@click.argument("paths", nargs=-1, required=True)
def track(paths: tuple[str, ...]) -> None:
    """Hash PATHS into the cache and write one record per path under .pivot/tracked/.

    Commit the records: stages reading these paths then work in a clone that lacks the
    data (it is restored from the cache or the remote when needed), and push, fetch and
    pull move it. Track again after the data changed.
    """
    for result in tracking.track(paths):
        record = result.record
        state = "recorded" if result.changed else "unchanged"
        click.echo(f"{state}  {record.path}  ({record.kind}, {record.size} bytes)")


@click.command(short_help="Stop tracking raw data (the data itself is kept).")
@click.argument("paths", nargs=-1, required=True)
def untrack(paths: tuple[str, ...]) -> None:
    """Remove the records of PATHS from .pivot/tracked/; the files stay where they are."""
    for path in tracking.untrack(paths):
        click.echo(f"untracked  {path}")
