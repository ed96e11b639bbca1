"""Options several commands share: targets and --all, link modes, transfer options."""

from __future__ import annotations

import click

LINK_MODES = ("copy", "hardlink", "symlink")
JOBS_HELP = "Parallel transfers (default: the remote's `jobs` option, else 8)."


def targets_options(func):
    """TARGETS and -a/--all, for the commands that work on stages."""
    func = click.option(
        "-a", "--all", "all_pipelines", is_flag=True, help="Every pipeline under the project root."
    )(func)
    return click.argument("targets", nargs=-1)(func)


def transfer_options(func):
    """TARGETS, --all, --json, --jobs and --remote, for push, fetch and pull."""
    func = click.argument("targets", nargs=-1)(func)
    func = click.option(
        "-a", "--all", "all_pipelines", is_flag=True, help="Every stage of the project."
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")(func)
    func = click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help=JOBS_HELP)(
        func
    )
    return click.option("-r", "--remote", "remote_name", default=None, help="Remote name.")(func)
