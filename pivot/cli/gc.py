"""`gc`: remove what no lock file references from the local cache."""

from __future__ import annotations

import click

from pivot.cli import render
from pivot.services.gc import gc as collect


@click.command("gc")
@click.option("-n", "--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def gc(dry_run: bool, as_json: bool) -> None:
    """Remove cache objects and run records no lock file references."""
    summary = collect(dry_run)
    if as_json:
        render.as_json(summary.to_dict(), sort_keys=True)
    else:
        render.gc_line(summary, dry_run)
