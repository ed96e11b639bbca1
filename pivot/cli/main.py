"""The `pivot` click group and its runner (`cli.entry` calls it): commands are imported
only when they run, and errors become one paragraph and an exit code."""

from __future__ import annotations

import gc
import importlib
import sys
import time
from typing import NamedTuple, NoReturn

from pivot._gcpause import collector_paused
from pivot.cli.entry import STARTED

with collector_paused():  # click's modules live as long as the process (see `get_command`)
    import click

    from pivot.cli import console

VERBOSE = {"on": False}
PROG = "pivot"  # also under `python -m pivot`, so that shell completion finds its variable


def elapsed() -> float:
    """Seconds since this process started reading its command line."""
    return time.perf_counter() - STARTED


class Lazy(NamedTuple):
    """A command as `pivot --help` lists it without importing it: where it is
    (`module:attribute`), its short help, and whether that is its explicit `short_help`
    (shown whole) or the first sentence of its docstring (shortened to fit, as click does)."""

    target: str
    short_help: str
    explicit: bool = False


COMMANDS = {
    "checkout": Lazy(
        "pivot.cli.stages:checkout", "Put cached outputs back into the workspace.", True
    ),
    "completion": Lazy(
        "pivot.cli.completion:completion",
        "Print the shell completion script (bash, zsh, fish).",
        True,
    ),
    "dag": Lazy("pivot.cli.stages:dag", "Print the stage graph, grouped by pipeline."),
    "fetch": Lazy("pivot.cli.transfer:fetch", "Download outputs into the local cache.", True),
    "gc": Lazy(
        "pivot.cli.gc:gc", "Remove cache objects (or remote packs) nothing references.", True
    ),
    "init": Lazy(
        "pivot.cli.stages:init", "Create .pivot/ in the current directory (the project root)."
    ),
    "list": Lazy("pivot.cli.stages:list_stages", "Stages with their deps and outs."),
    "metrics": Lazy(
        "pivot.cli.results:metrics", "Metric values: show them, or compare revisions.", True
    ),
    "params": Lazy(
        "pivot.cli.results:params", "Stage params: show them, or compare revisions.", True
    ),
    "plots": Lazy(
        "pivot.cli.results:plots", "Plots as one HTML page: show or diff revisions.", True
    ),
    "pull": Lazy("pivot.cli.transfer:pull", "Fetch outputs and check them out.", True),
    "push": Lazy("pivot.cli.transfer:push", "Send outputs and run records to the remote.", True),
    "remote": Lazy(
        "pivot.cli.remotes:remote", "Manage remotes (S3, local directories, any fsspec URL)."
    ),
    "run": Lazy("pivot.cli.stages:run", "Run what changed; restore the rest from the cache.", True),
    "status": Lazy("pivot.cli.stages:status", "What would run, and why."),
    "track": Lazy(
        "pivot.cli.track:track",
        "Record raw data (files or folders) to share it.",
        True,
    ),
    "untrack": Lazy(
        "pivot.cli.track:untrack", "Stop tracking raw data (the data itself is kept).", True
    ),
    "verify": Lazy("pivot.cli.stages:verify", "CI gate: fail unless up to date and pushed.", True),
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when one runs (click's documented
    lazy-loading pattern); its help lists them from their `Lazy` entries."""

    def __init__(self, *args, lazy: dict[str, Lazy], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].target.partition(":")
        if module in sys.modules:
            return getattr(sys.modules[module], attribute)
        if cmd_name == "run":  # its lock files are read while its modules import
            from pivot.run.lock_prefetch import start_early

            start_early(sys.argv)
        # A command's modules live until the process exits: collecting while they are
        # imported only traverses them (about 30 collections for `run`), and frozen after
        # it, later collections skip them.
        with collector_paused():
            return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(map(len, self.lazy))
        rows = []
        for name in self.list_commands(ctx):
            entry = self.lazy[name]
            short = entry.short_help
            if not entry.explicit:
                short = click.utils.make_default_short_help(short, limit)
            rows.append((name, short))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="pivot")
def cli(verbose: bool) -> None:
    """Pivot: typed Python pipelines on a content-addressed cache."""
    VERBOSE["on"] = verbose
    console.show_warnings()


def main() -> None:
    """Run the click group, turning known errors into one clear paragraph."""
    started = time.perf_counter()
    try:
        cli.main(standalone_mode=False, prog_name=PROG)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (Exception, KeyboardInterrupt) as exc:
        fail(exc, started)
    # The process exits next: the collections of its teardown would only traverse what
    # exists now, which goes with the process; frozen, they skip it.
    gc.freeze()


def fail(exc: Exception | KeyboardInterrupt, started: float) -> NoReturn:
    """Show an error of the command started at `started` as one paragraph (a traceback
    only with `--verbose`) and exit with its code: the click group's errors, and those of
    a replayed no-op (`cli.entry`)."""
    from pivot.errors import NO_SPACE, DiskFull, PivotError, not_writable

    if isinstance(exc, click.ClickException):
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(exc, PivotError):
        if VERBOSE["on"]:
            import traceback

            traceback.print_exc()
        from pivot.cli.advice import paragraph

        console.error(paragraph(exc))
        sys.exit(exc.exit_code)
    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        console.error(
            f"Interrupted after {time.perf_counter() - started:.1f}s. Finished stages are "
            f"recorded; nothing half-written was kept. Run again to continue."
        )
        sys.exit(130)
    if VERBOSE["on"]:
        raise exc
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:  # a write not named yet
        from pivot.cli.advice import paragraph

        full = DiskFull(exc.filename or "a file")
        console.error(paragraph(full))
        sys.exit(full.exit_code)
    refused = not_writable(exc)  # a folder Pivot writes in that it may not write in
    if refused is not None:
        from pivot.cli.advice import paragraph

        console.error(paragraph(refused))
        sys.exit(refused.exit_code)
    console.error(
        f"Internal error: {type(exc).__name__}: {exc}. Run with `pivot --verbose ...` "
        f"for the traceback, and please report it."
    )
    sys.exit(2)
