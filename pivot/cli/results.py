"""`pivot metrics`, `pivot params` and `pivot plots`: show and diff."""

from __future__ import annotations

import pathlib

import click

from pivot.cli import console
from pivot.cli.options import all_option, targets_options
from pivot.cli.tables import render
from pivot.services import results


def _format_options(func):
    """--json / --md / --csv and --precision."""
    func = click.option(
        "--precision", type=click.IntRange(min=0), default=5, show_default=True,
        help="Decimals shown for floats (not in --json).",
    )(func)  # fmt: skip
    for flag, value, what in (
        ("--csv", "csv", "CSV."),
        ("--md", "md", "a Markdown table."),
        ("--json", "json", "JSON."),
    ):
        func = click.option(flag, "fmt", flag_value=value, help=f"Print {what}")(func)
    return func


def _revs_options(metavar: str):
    """REVS (shown as `metavar`) and -a/--all, for the commands that compare revisions."""

    def decorate(func):
        return click.argument("revs", nargs=-1, metavar=metavar)(all_option(func))

    return decorate


def _diff_options(func):
    """[A_REV [B_REV]], -a/--all and -u/--unchanged."""
    func = click.option(
        "-u", "--unchanged", is_flag=True, help="Also list the keys whose value is the same."
    )(func)
    return _revs_options("[A_REV [B_REV]]")(func)


def _print(compared: results.Compared, fmt: str | None, first: str, diff: bool, precision: int):
    for note in compared.notes:
        console.warn(note)
    if not compared.rows and fmt in (None, "table"):
        what = "changed values" if diff else "values"
        click.echo(f"No {what} to show.", err=True)
        return
    click.echo(render(fmt or "table", first, compared.revs, compared.rows, diff, precision))


@click.group(short_help="Metric values: show them, or compare revisions.")
def metrics() -> None:
    """Metric values (pivot.Metric outputs): show the workspace's, or compare revisions."""


@metrics.command("show")
@targets_options
@_format_options
def metrics_show(targets, all_pipelines, fmt, precision) -> None:
    """The metric values in the workspace: path, key, value."""
    compared = results.metrics_show(tuple(targets), all_pipelines)
    _print(compared, fmt, "Path", False, precision)


@metrics.command("diff")
@_diff_options
@_format_options
def metrics_diff(revs, all_pipelines, unchanged, fmt, precision) -> None:
    """Compare metrics of A_REV (default HEAD) and B_REV (default the workspace).

    A revision is any git revision (branch, tag, HEAD~3, commit) or `workspace`; the
    values of a revision come from its committed lock files.
    """
    compared = results.metrics_diff(tuple(revs), all_pipelines, unchanged)
    _print(compared, fmt, "Path", True, precision)


@click.group(short_help="Stage params: show them, or compare revisions.")
def params() -> None:
    """Stage params: show the current ones, or compare revisions."""


@params.command("show")
@targets_options
@_format_options
def params_show(targets, all_pipelines, fmt, precision) -> None:
    """The params of the stages as defined now: stage, key, value."""
    compared = results.params_show(tuple(targets), all_pipelines)
    _print(compared, fmt, "Stage", False, precision)


@params.command("diff")
@_diff_options
@_format_options
def params_diff(revs, all_pipelines, unchanged, fmt, precision) -> None:
    """Compare params of A_REV (default HEAD's lock files) and B_REV (default the current
    stage definitions)."""
    compared = results.params_diff(tuple(revs), all_pipelines, unchanged)
    _print(compared, fmt, "Stage", True, precision)


def _page_options(func):
    func = click.option("--open", "open_page", is_flag=True, help="Open the page in a browser.")(
        func
    )
    return click.option(
        "-o", "--out", "out_dir", type=click.Path(path_type=pathlib.Path),
        default=pathlib.Path("pivot_plots"), show_default=True,
        help="Folder to write index.html into.",
    )(func)  # fmt: skip


def _report(page: results.Page, open_page: bool) -> None:
    for note in page.notes:
        console.warn(note)
    click.echo(f"Wrote {page.plots} plot(s) to {page.path}")
    if open_page:
        click.launch(str(page.path))


@click.group(short_help="Plots as one HTML page: show or diff revisions.")
def plots() -> None:
    """Plots (pivot.Plot outputs) as one self-contained HTML page."""


@plots.command("show")
@targets_options
@_page_options
def plots_show(targets, all_pipelines, out_dir, open_page) -> None:
    """Draw the workspace's plots into OUT/index.html (no network needed to view it)."""
    _report(results.plots_show(tuple(targets), all_pipelines, out_dir), open_page)


@plots.command("diff")
@_revs_options("[REVS...]")
@_page_options
def plots_diff(revs, all_pipelines, out_dir, open_page) -> None:
    """Draw each plot with one series per revision (default: HEAD and the workspace; one
    revision: it and the workspace). Data of older revisions comes from the local cache
    or, if absent there, from the remote; a revision whose data is nowhere is named in
    the page."""
    _report(results.plots_diff(tuple(revs), all_pipelines, out_dir), open_page)
