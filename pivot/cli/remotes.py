"""The `remote` group: add, list, remove, default, modify, clean."""

from __future__ import annotations

import click

from pivot.cli import render
from pivot.cli.options import complete_remotes
from pivot.services import remotes


@click.group("remote")
def remote() -> None:
    """Manage remotes (S3, local directories, any fsspec URL)."""


@remote.command("add")
@click.argument("name", shell_complete=complete_remotes)
@click.argument("url")
@click.option("-d", "--default", "make_default", is_flag=True, help="Make it the default.")
@click.option("--local", is_flag=True, help="Write to .pivot/config.local.yaml (not committed).")
def remote_add(name: str, url: str, make_default: bool, local: bool) -> None:
    """Add remote NAME at URL (s3://bucket/prefix, /path, memory://..., ...)."""
    row = remotes.add(name, url, make_default, local)
    suffix = " (default)" if make_default else ""
    click.echo(f"Added remote {name} -> {row['url']}{_where(row)}{suffix}")


def _where(row: dict) -> str:
    """A local remote's folder, resolved against the project root, and whether it exists."""
    if "path" not in row:
        return ""
    notes = [row["path"]] if row["path"] != row["url"] else []
    if not row["exists"]:
        notes.append("does not exist")
    return f" ({', '.join(notes)})" if notes else ""


@remote.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def remote_list(as_json: bool) -> None:
    """List the configured remotes (secrets hidden)."""
    rows = remotes.list_remotes()
    if as_json:
        render.as_json(rows)
        return
    if not rows:
        click.echo("No remotes. Add one with `pivot remote add NAME URL`.")
    for row in rows:
        mark = "*" if row["default"] else " "
        hidden = ("name", "url", "default", "path", "exists")
        extras = " ".join(f"{k}={v}" for k, v in row.items() if k not in hidden)
        shown = f"{row['url']}{_where(row)}"
        click.echo(f"{mark} {row['name']}\t{shown}" + (f"\t{extras}" if extras else ""))


@remote.command("remove")
@click.argument("name", shell_complete=complete_remotes)
def remote_remove(name: str) -> None:
    """Remove remote NAME (from both config files)."""
    remotes.remove(name)
    click.echo(f"Removed remote {name}")


@remote.command("default")
@click.argument("name", shell_complete=complete_remotes)
@click.option("--local", is_flag=True, help="Write to .pivot/config.local.yaml.")
def remote_default(name: str, local: bool) -> None:
    """Make NAME the default remote."""
    remotes.set_default(name, local)
    click.echo(f"Default remote: {name}")


@remote.command("modify")
@click.argument("name", shell_complete=complete_remotes)
@click.argument("key")
@click.argument("value", required=False)
@click.option("--local", is_flag=True, help="Write to .pivot/config.local.yaml (for secrets).")
@click.option("--unset", is_flag=True, help="Remove KEY instead of setting it.")
def remote_modify(name: str, key: str, value: str | None, local: bool, unset: bool) -> None:
    """Set option KEY of remote NAME: url, jobs, or a storage option of its backend."""
    shown = remotes.modify(name, key, value, local, unset)
    click.echo(f"Unset {name}.{key}" if unset else f"Set {name}.{key} = {shown}")


@remote.command("clean")
@click.argument("name", required=False, shell_complete=complete_remotes)
@click.option(
    "--older-than",
    "hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Only uploads begun at least this many hours ago (a push may still be running).",
)
def remote_clean(name: str | None, hours: float) -> None:
    """Abort the unfinished uploads that killed pushes left on remote NAME (default: the
    default remote): S3 multipart uploads, or a local remote's temp files."""
    count, where = remotes.clean(name, hours)
    click.echo(f"Aborted {count} unfinished upload(s) older than {hours:g} h on {where}.")
