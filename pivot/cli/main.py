"""The `pivot` command line: parse, call one function, render."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import click

from pivot import console

VERBOSE = {"on": False}
LINK_MODES = ("copy", "hardlink", "symlink")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="pivot")
def cli(verbose: bool) -> None:
    """Pivot: typed Python pipelines on a content-addressed cache."""
    VERBOSE["on"] = verbose


def _targets_options(func):
    func = click.option(
        "-a", "--all", "all_pipelines", is_flag=True, help="Every pipeline under the project root."
    )(func)
    return click.argument("targets", nargs=-1)(func)


@cli.command()
def init() -> None:
    """Create .pivot/ in the current directory (the project root)."""
    from pivot.project import find_root, init_project

    here = pathlib.Path.cwd().resolve()
    outer = find_root(here.parent) if here.parent != here else None
    pivot_dir, created = init_project(here)
    if created:
        click.echo(f"Initialized a Pivot project in {pivot_dir}")
    else:
        click.echo(f"{pivot_dir} already exists; nothing to do.")
    if outer is not None:
        console.warn(f"{outer} already holds .pivot/; it stays the project root, not {here}.")


@cli.command(short_help="Run what changed; restore the rest from the cache.")
@_targets_options
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Stages run at once (default: CPU count).",
)
@click.option("-f", "--force", is_flag=True, help="Run the targets even when up to date.")
@click.option("-n", "--dry-run", is_flag=True, help="Say what would run; change nothing.")
@click.option(
    "-k",
    "--keep-going",
    is_flag=True,
    help="After a stage fails, still run the stages that do not depend on it.",
)
@click.option(
    "--link",
    type=click.Choice(LINK_MODES),
    default="copy",
    show_default=True,
    help="How restored outputs are placed in the workspace.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary line.")
@click.option(
    "-r",
    "--remote",
    "remote_name",
    default=None,
    help="Restore from (and push to) this remote instead of the default one.",
)
@click.option("--no-remote", is_flag=True, help="Stay offline: restore only from the local cache.")
@click.option(
    "--no-fallback",
    is_flag=True,
    help="Stop with an error when the remote fails, instead of running the stages.",
)
@click.option(
    "--materialize",
    is_flag=True,
    help="Check out every restored output, also those no stage here reads.",
)
@click.option("--push", is_flag=True, help="Push outputs and run records when the run ends.")
def run(
    targets,
    all_pipelines,
    jobs,
    force,
    dry_run,
    keep_going,
    link,
    quiet,
    remote_name,
    no_remote,
    no_fallback,
    materialize,
    push,
) -> None:
    """Run the stages of this pipeline (or TARGETS) and everything upstream.

    Stages whose inputs match an earlier run (here, or on any machine that pushed to the
    default remote) are restored from the cache instead of running.
    """
    from pivot.cache.store import LinkMode
    from pivot.run.scheduler import RunOptions
    from pivot.services import stages

    options = RunOptions(
        jobs=jobs or os.cpu_count() or 1,
        keep_going=keep_going,
        link=LinkMode(link),
        fallback=not no_fallback,
        materialize_all=materialize,
    )
    stages.run(
        targets=targets,
        all_pipelines=all_pipelines,
        force=force,
        dry_run=dry_run,
        quiet=quiet,
        options=options,
        remote_name=remote_name,
        use_remote=not no_remote,
        push=push,
    )


@cli.command()
@_targets_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--remote",
    "with_remote",
    is_flag=True,
    help="Also say where each output is: local, remote or missing.",
)
@click.option(
    "-r",
    "--remote-name",
    default=None,
    help="Ask this remote instead of the default one (implies --remote).",
)
def status(targets, all_pipelines, as_json, with_remote, remote_name) -> None:
    """What would run, and why."""
    from pivot.services import stages

    rows = stages.status(
        targets, all_pipelines, remote_name, with_remote or remote_name is not None
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    labels = {
        "skip": "up to date",
        "restore": "restorable",
        "run": "will run",
        "pending": "will run",
    }
    colors = {"skip": None, "restore": "cyan", "run": "yellow", "pending": "yellow"}
    for row in rows:
        label = click.style(f"{labels[row['action']]:<11}", fg=colors[row["action"]])
        click.echo(f"  {label} {row['stage']:<40} {row['file']}")
        for reason in row["reasons"]:
            click.echo(f"      - {reason}")
        for path, where in row.get("outputs", {}).items():
            color = {"local": "green", "remote": "cyan", "missing": "red"}[where]
            click.echo(f"      {click.style(f'{where:<8}', fg=color)} {path}")
    stale = sum(1 for r in rows if r["action"] != "skip")
    stages = f"{len(rows)} stage{'s' * (len(rows) != 1)}"
    click.echo(
        f"{stages}, {stale} not up to date." if stale else f"Every stage is up to date ({stages})."
    )


@cli.command(short_help="CI gate: fail unless up to date and pushed.")
@_targets_options
@click.option("-r", "--remote", "remote_name", default=None, help="The remote to check.")
def verify(targets, all_pipelines, remote_name) -> None:
    """Exit non-zero unless every stage is up to date and its outputs are on the remote."""
    from pivot.errors import PivotError
    from pivot.services import stages

    problems, total, where = stages.verify(targets, all_pipelines, remote_name)
    if problems:
        for problem in problems:
            click.echo(f"  {click.style('✗', fg='red')} {problem}")
        raise PivotError(f"{len(problems)} problem(s) among {total} stage(s); see the list above.")
    click.echo(f"All {total} stages are up to date and their outputs are on {where}.")


@cli.command(name="list")
@_targets_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_stages(targets, all_pipelines, as_json) -> None:
    """Stages with their deps and outs."""
    from pivot.services import stages

    rows = stages.list_stages(targets, all_pipelines)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{click.style(row['stage'], bold=True)}  ({row['file']})")
        for dep in row["deps"]:
            click.echo(f"    dep  {dep}")
        for out in row["outs"]:
            click.echo(f"    out  {out}")


@cli.command(short_help="Put cached outputs back into the workspace.")
@_targets_options
@click.option(
    "--link",
    type=click.Choice(LINK_MODES),
    default="copy",
    show_default=True,
    help="How outputs are placed in the workspace.",
)
def checkout(targets, all_pipelines, link) -> None:
    """Restore outputs recorded in lock files from the cache into the workspace."""
    from pivot.services import stages

    placed, unchanged = stages.checkout(targets, all_pipelines, link)
    click.echo(f"Checked out {placed} output(s); {unchanged} already in place.")


@cli.command()
@_targets_options
@click.option("--dot", "fmt", flag_value="dot", help="Graphviz dot.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="Mermaid flowchart.")
def dag(targets, all_pipelines, fmt) -> None:
    """Print the stage graph, grouped by pipeline."""
    from pivot.cli import dagview
    from pivot.services import stages

    scope = stages.scope_for(targets, all_pipelines)
    render = {"dot": dagview.dot, "mermaid": dagview.mermaid}.get(fmt, dagview.text)
    click.echo(render(scope.graph, scope.discovery.project.root))


def main() -> None:
    """Entry point: run the CLI, turning known errors into one clear paragraph."""
    from pivot.errors import NO_SPACE, PivotError, disk_full

    started = time.perf_counter()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PivotError as exc:
        if VERBOSE["on"]:
            import traceback

            traceback.print_exc()
        console.error(str(exc))
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        console.error(
            f"Interrupted after {time.perf_counter() - started:.1f}s. Finished stages are "
            f"recorded; nothing half-written was kept. Run again to continue."
        )
        sys.exit(130)
    except Exception as exc:
        if VERBOSE["on"]:
            raise
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:  # a write not named yet
            console.error(str(disk_full(exc.filename or "a file")))
            sys.exit(1)
        console.error(
            f"Internal error: {type(exc).__name__}: {exc}. Run with `pivot --verbose ...` "
            f"for the traceback, and please report it."
        )
        sys.exit(2)


def _register_remote_commands() -> None:
    from pivot.cli.remote import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register_remote_commands()
