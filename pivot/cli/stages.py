"""The stage commands: `init`, `run`, `status`, `verify`, `list`, `checkout`, `dag`."""

from __future__ import annotations

import pathlib

import click

from pivot.cache.checkout import LinkMode
from pivot.cli import advice, console, dagview, render
from pivot.cli.main import elapsed
from pivot.cli.options import (
    LINK_MODES,
    complete_remotes,
    json_option,
    quiet_option,
    targets_options,
)
from pivot.errors import PivotError, StageFailed
from pivot.project import find_root, init_project
from pivot.run.scheduler import RunOptions
from pivot.services import scope as scopes
from pivot.services import stages


@click.command()
def init() -> None:
    """Create .pivot/ in the current directory (the project root)."""
    here = pathlib.Path.cwd().resolve()
    outer = find_root(here.parent) if here.parent != here else None
    pivot_dir, created = init_project(here)
    if created:
        click.echo(f"Initialized a Pivot project in {pivot_dir}")
        click.echo(
            "Outputs and tracked data will be listed in the .gitignore next to each "
            "(`gitignore: false` in .pivot/config.yaml turns that off)."
        )
    else:
        click.echo(f"{pivot_dir} already exists; nothing to do.")
    if outer is not None:
        console.warn(f"{outer} already holds .pivot/; it stays the project root, not {here}.")


@click.command(short_help="Run what changed; restore the rest from the cache.")
@targets_options
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Stages run at once (default: CPU count).",
)
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Run the targets even when up to date; restores may discard edited outputs.",
)
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
    default=None,
    help="How restored outputs are placed in the workspace (default: the config's "
    "cache.link, else copy).",
)
@quiet_option
@json_option
@click.option(
    "-r",
    "--remote",
    "remote_name",
    default=None,
    help="Restore from (and push to) this remote instead of the default one.",
    shell_complete=complete_remotes,
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
@click.option(
    "-w",
    "--watch",
    is_flag=True,
    help="After the run, watch the scope's files and run again on every change (Ctrl-C stops).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default=None,
    help="Where stages run: processes here (default) or a Dask cluster (config: executor).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="The Dask scheduler, e.g. tcp://host:8786 (config: dask.scheduler).",
)
def run(
    targets,
    all_pipelines,
    jobs,
    force,
    dry_run,
    keep_going,
    link,
    quiet,
    as_json,
    remote_name,
    no_remote,
    no_fallback,
    materialize,
    push,
    watch,
    executor,
    scheduler,
) -> None:
    """Run the stages of this pipeline (or TARGETS) and everything upstream.

    Stages whose inputs match an earlier run (here, or on any machine that pushed to the
    default remote) are restored from the cache instead of running.
    """
    options = RunOptions(
        jobs=jobs,
        keep_going=keep_going,
        link=LinkMode(link) if link else None,
        fallback=not no_fallback,
        materialize_all=materialize,
        executor=executor,
        scheduler=scheduler,
    )
    if watch:
        if dry_run or push:
            raise click.UsageError("--watch cannot be combined with --dry-run or --push.")
        if executor == "dask":
            raise click.UsageError("--watch runs stages on this machine: not with --executor dask.")
        from pivot.cli import watching
        from pivot.watch.session import WatchRequest

        request = WatchRequest(targets, all_pipelines, force, options, remote_name, not no_remote)
        watching.serve(request, as_json, quiet)
        return

    def show(report) -> None:
        if not quiet and not as_json:
            render.stage_line(report)
            if report.output:
                click.echo(report.output.rstrip("\n"))
        if report.status == "failed":
            click.echo(advice.stage_failure(report.detail, report.cause), err=True)

    result = stages.run(
        targets=targets,
        all_pipelines=all_pipelines,
        force=force,
        dry_run=dry_run,
        options=options,
        remote_name=remote_name,
        use_remote=not no_remote,
        push=push,
        on_stage=show,
        view="json" if as_json else "quiet" if quiet else "lines",
    )
    if result.decisions is not None:
        if as_json:
            rows = render.plan_rows(result.decisions, result.edits)
            render.as_json({"plan": rows, "total": result.total})
        else:
            render.plan(result.decisions, result.edits)
        return
    report = result.report
    seconds = elapsed()
    if as_json:
        render.as_json(render.run_json(report, result.total, seconds))
    else:
        render.run_summary(report, result.total, seconds)
    if report.failed:
        names = ", ".join(s.stage_id for s in report.failed)
        raise StageFailed(
            f"{len(report.failed)} stage(s) did not complete: {names}.",
            stages=tuple(s.stage_id for s in report.failed),
        )
    if push:
        render.pushed_after_run(stages.push_outputs(result))


@click.command()
@targets_options
@json_option
@quiet_option
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
    shell_complete=complete_remotes,
    help="The remote to consider instead of the default one (as `run -r`).",
)
def status(targets, all_pipelines, as_json, quiet, with_remote, remote_name) -> None:
    """What would run, and why."""
    result = stages.status(targets, all_pipelines, remote_name, with_remote)
    changes = stages.tracked_changes()
    if as_json:
        render.as_json(result.rows + changes)
    else:
        render.status_table(result.rows, quiet)
        render.tracked_changes(changes)
        if result.elsewhere is not None and result.elsewhere.stages:
            render.stale_elsewhere(result.elsewhere)


@click.command(short_help="CI gate: fail unless up to date and pushed.")
@targets_options
@click.option(
    "-r",
    "--remote",
    "remote_name",
    default=None,
    help="The remote to check.",
    shell_complete=complete_remotes,
)
@json_option
@quiet_option
def verify(targets, all_pipelines, remote_name, as_json, quiet) -> None:
    """Exit non-zero unless every stage is up to date and its outputs are on the remote."""
    problems, total, where = stages.verify(targets, all_pipelines, remote_name)
    if as_json:
        rows = [{"what": p.what, "stale": p.stale} for p in problems]
        render.as_json({"ok": not problems, "total": total, "remote": where, "problems": rows})
    elif not quiet:
        for problem in problems:
            fix = "run `pivot run` and commit" if problem.stale else "run `pivot push`"
            click.echo(f"  {click.style('✗', fg='red')} {problem.what}: {fix}")
    if problems:
        shown = "" if quiet and not as_json else "; see the list above"
        raise PivotError(f"{len(problems)} problem(s) among {total} stage(s){shown}.")
    if not as_json:
        click.echo(f"All {total} stages are up to date and their outputs are on {where}.")


@click.command(name="list")
@targets_options
@json_option
def list_stages(targets, all_pipelines, as_json) -> None:
    """Stages with their deps and outs."""
    rows = stages.list_stages(targets, all_pipelines)
    if as_json:
        render.as_json(rows)
        return
    for row in rows:
        click.echo(f"{click.style(row['stage'], bold=True)}  ({row['file']})")
        for dep in row["deps"]:
            click.echo(f"    dep  {dep}")
        for out in row["outs"]:
            click.echo(f"    out  {out}")


@click.command(short_help="Put cached outputs back into the workspace.")
@targets_options
@click.option(
    "--link",
    type=click.Choice(LINK_MODES),
    default=None,
    help="How outputs are placed in the workspace (default: the config's cache.link, else copy).",
)
@json_option
@quiet_option
@click.option(
    "-f", "--force", is_flag=True, help="Discard edits to outputs that exist nowhere else."
)
def checkout(targets, all_pipelines, link, as_json, quiet, force) -> None:
    """Restore outputs recorded in lock files (and tracked data) from the cache into the
    workspace. A file whose content is in neither a lock nor the cache is not
    overwritten unless --force."""
    placed, unchanged = stages.checkout(targets, all_pipelines, link, force)
    if as_json:
        render.as_json({"checked_out": placed, "already_in_place": unchanged})
    else:
        click.echo(f"Checked out {placed} output(s); {unchanged} already in place.")


@click.command()
@targets_options
@click.option("--dot", "fmt", flag_value="dot", help="Graphviz dot.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="Mermaid flowchart.")
@click.option("--json", "fmt", flag_value="json", help="Machine-readable output.")
def dag(targets, all_pipelines, fmt) -> None:
    """Print the stage graph, grouped by pipeline."""
    scope = scopes.scope_for(targets, all_pipelines)
    formats = {"dot": dagview.dot, "mermaid": dagview.mermaid, "json": dagview.as_json}
    show = formats.get(fmt, dagview.text)
    click.echo(show(scope.graph, scope.discovery.project.root))
