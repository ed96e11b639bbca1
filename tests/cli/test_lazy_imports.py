"""`pivot --help` and a no-op `pivot run` must not pay for heavy imports, and `pivot --help`
imports no command module."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from spec_projects import PARENT_CHILD
from support import PYTHONPATH, imported_heavy_modules, loaded_modules, write_files

from pivot.cli.main import COMMANDS, cli


@pytest.mark.parametrize("args", [("--help",), ("run", "--help")])
def test_help_imports_nothing_heavy(tmp_path, args) -> None:
    assert imported_heavy_modules(tmp_path, *args) == []


def test_noop_run_imports_nothing_heavy(project, pivot) -> None:
    write_files(project, PARENT_CHILD)
    pivot("run", cwd="analysis")
    assert imported_heavy_modules(project / "analysis", "run") == []


# Modules a no-op run does not need: the results modules are loaded only when a stage
# declares a pivot.Metric or pivot.Plot (or a metrics CSV is read), the executors' outcome
# and the ready queue only when a stage runs, the other pipelines' summary only by
# `status`, `pickle` only when a stage loads or saves with `loaders.Pickle`, and the remote
# URL helpers only when a remote is configured, the streamed tree checkout (and with it
# `subprocess`) only by a pull.
@pytest.mark.parametrize(
    "unneeded",
    [
        ("pivot.define.results", "csv"),
        ("pivot.run.executor", "pivot.run.ready", "pivot.services.elsewhere"),
        ("pickle",),
        ("pivot.urls",),
        ("pivot.cache.streamed", "pivot.cache.tree_writer", "subprocess"),
    ],
    ids=["results", "executor-and-status", "pickle", "urls", "streamed"],
)
def test_noop_run_skips_modules_it_does_not_need(project, pivot, unneeded) -> None:
    write_files(project, PARENT_CHILD)
    pivot("run", cwd="analysis")
    proc, loaded = loaded_modules(project / "analysis", unneeded, "run")
    assert "up to date" in proc.stdout
    assert loaded == []


def test_first_run_imports_no_results_modules(project, pivot) -> None:
    """A run that executes stages checks metrics files only when a stage declares a
    pivot.Metric: the results modules stay unloaded otherwise."""
    write_files(project, PARENT_CHILD)
    proc, loaded = loaded_modules(project, ("pivot.define.results",), "run", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "ran" in proc.stdout
    assert (project / ".pivot" / "stages").is_dir()
    assert loaded == []


COMMAND_MODULES = ("pivot.cli.stages", "pivot.cli.remotes", "pivot.cli.transfer", "pivot.cli.gc")
PROBE_COMMANDS = """
import sys
sys.argv = ["pivot", "--help"]
from pivot.cli.entry import main
try:
    main()
finally:
    print(sorted(m for m in sys.modules if m.startswith(("pivot.cli.", "pivot.services"))),
          file=sys.stderr)
"""


def test_help_lists_every_command_without_importing_one(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE_COMMANDS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        check=False,
    )
    assert proc.stderr.strip().splitlines()[-1] == (
        "['pivot.cli.console', 'pivot.cli.entry', 'pivot.cli.main']"
    )
    table = proc.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in table] == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_table_matches_each_command(name) -> None:
    """The short help `pivot --help` shows unimported is the command's own."""
    command = cli.get_command(click.Context(cli), name)
    entry = COMMANDS[name]
    assert command.name == name
    assert (command.short_help is not None) == entry.explicit
    assert command.get_short_help_str(limit=1000) == entry.short_help
