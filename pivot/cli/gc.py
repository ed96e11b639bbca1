"""`gc`: remove what no lock file or tracked record references, from the local cache
(or with --remote, from a remote)."""

from __future__ import annotations

import click

from pivot.cli import console, render
from pivot.errors import PivotError


@click.command("gc", short_help="Remove cache objects (or remote packs) nothing references.")
@click.option("-n", "--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option(
    "-w",
    "--workspace",
    is_flag=True,
    help="Keep only what the workspace's lock files and records need (not branches and tags).",
)
@click.option(
    "-A",
    "--all-commits",
    is_flag=True,
    help="Keep what any commit of the git history needs, not only branches and tags.",
)
@click.option(
    "-r",
    "--remote",
    "remote_name",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[NAME]",
    help="Collect the remote NAME (default: the default remote) instead of the local cache.",
)
@click.option(
    "--grace",
    "grace_hours",
    type=click.FloatRange(min=0),
    default=None,
    metavar="HOURS",
    help="With --remote: spare packs and indexes younger than this (default: the config's "
    "gc_grace_hours, else 24).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def gc(
    dry_run: bool,
    workspace: bool,
    all_commits: bool,
    remote_name,
    grace_hours: float | None,
    as_json: bool,
) -> None:
    """Remove cache objects and run records that no lock file or tracked-data record
    references, in the workspace or on any local branch or tag (git)."""
    from pivot.services import gc as service
    from pivot.services.reachable import ALL_COMMITS, REFS, WORKSPACE

    if workspace and all_commits:
        raise PivotError("--workspace and --all-commits contradict each other; pass one.")
    reach = WORKSPACE if workspace else ALL_COMMITS if all_commits else REFS

    def warn_unpushed(digests: list[str], nbytes: int, unchecked: list[str]) -> None:
        from pivot.remote.transfer import human_bytes

        verb = "would remove" if dry_run else "removes"
        shown = ", ".join(d[:12] for d in digests[:5]) + (" ..." if len(digests) > 5 else "")
        not_checked = "".join(
            f" The check could not be made for remote {u.rstrip()}"
            f"{'' if u.rstrip().endswith(('.', '!', '?')) else '.'} "
            f"It counts as holding none of them."
            for u in unchecked
        )
        console.warn(
            f"gc {verb} {len(digests)} object(s) ({human_bytes(nbytes)}) that no configured "
            f"remote holds (by each remote's indexes, checked against its identity): "
            f"{shown}. They are not referenced within {reach}; once removed they exist "
            f"nowhere.{not_checked} Run `pivot push` on the branch that made them first if "
            f"you want to keep them."
        )

    if remote_name is not None:
        result = service.gc_remote(remote_name or None, dry_run, reach, grace_hours)
        if as_json:
            render.as_json(result.to_dict(), sort_keys=True)
        else:
            render.remote_gc_line(result, dry_run)
        return
    result = service.gc(dry_run, reach, warn_unpushed)
    if as_json:
        render.as_json(result.to_dict(), sort_keys=True)
    else:
        render.gc_line(result.summary, dry_run)
        if result.live.note:
            console.warn(f"gc: {result.live.note}.")
