"""Options several commands share: targets and --all, link modes, transfer options."""

from __future__ import annotations

import click

LINK_MODES = ("copy", "hardlink", "symlink")
JOBS_HELP = "Parallel transfers (default: the remote's `jobs` option, else 8)."


QUIET_HELP = "No per-item lines or progress bar: only the summary line (and errors)."


def quiet_option(func):
    """-q/--quiet, for every command that prints a line per stage, output or blob."""
    return click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)(func)


def json_option(func):
    """--json: the command's result as one JSON document (docs/json.md)."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def complete_targets(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of TARGETS: stage ids and pipeline names."""
    from pivot.services.names import stage_names

    return [name for name in stage_names() if name.startswith(incomplete)]


def complete_remotes(ctx, param, incomplete: str) -> list[str]:
    """Shell completion of a remote's name."""
    from pivot.services.names import remote_names

    return [name for name in remote_names() if name.startswith(incomplete)]


def all_option(func):
    """-a/--all: every pipeline under the project root, not only the nearest one."""
    return click.option(
        "-a", "--all", "all_pipelines", is_flag=True, help="Every pipeline under the project root."
    )(func)


def targets_options(func):
    """TARGETS and -a/--all, for the commands that work on stages."""
    return click.argument("targets", nargs=-1, shell_complete=complete_targets)(all_option(func))


def transfer_options(func):
    """TARGETS, --all, --json, --quiet, --jobs and --remote, for push, fetch and pull."""
    func = click.argument("targets", nargs=-1, shell_complete=complete_targets)(func)
    func = quiet_option(func)
    func = click.option(
        "-a", "--all", "all_pipelines", is_flag=True, help="Every stage of the project."
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")(func)
    func = click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help=JOBS_HELP)(
        func
    )
    return click.option(
        "-r",
        "--remote",
        "remote_name",
        default=None,
        help="Remote name.",
        shell_complete=complete_remotes,
    )(func)
