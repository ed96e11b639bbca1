"""`pivot run --watch`: the watch loop's events as text lines or as JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING

import click

from pivot.cli import console, render
from pivot.cli.advice import paragraph, stage_failure

if TYPE_CHECKING:
    from pivot.watch.session import WatchEvent, WatchRequest


class TextEvents:
    """Stage lines as `run` prints them (after the first run, only the stages that did
    something), a line per change and per run, errors on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.changed = False

    def __call__(self, event: WatchEvent) -> None:
        data = event.data
        if event.event == "watching":
            click.echo(
                f"Watching {data['paths']} path{'s' * (data['paths'] != 1)} in "
                f"{data['pipelines']} pipeline{'s' * (data['pipelines'] != 1)}; Ctrl-C to stop."
            )
        elif event.event == "change":
            self.changed = True
            more = data["count"] - len(data["paths"])
            names = ", ".join(data["paths"]) + (f" and {more} more" if more else "")
            click.echo(f"Changed: {names}{' (reloading the pipelines)' if data['reload'] else ''}")
        elif event.event in ("stage_finished", "stage_failed") and event.report is not None:
            report = event.report
            if not self.quiet and not (self.changed and report.status == "skipped"):
                render.stage_line(report)
            if report.status == "failed":
                click.echo(stage_failure(report.detail, report.cause), err=True)
        elif event.event == "run_finished":
            summary(data)
        elif event.event == "error":
            console.error(paragraph(event.error) if event.error else data["message"])
            click.echo("Still watching: fix it and save to run again.")
        sys.stdout.flush()


def summary(data: dict) -> None:
    """The line that ends each run of the watch: as `run`'s, with cancelled stages."""
    total = data["stages"]
    stages = f"{total} stage{'s' * (total != 1)}"
    if data["skipped"] == total:
        click.echo(f"Every stage is up to date ({stages}, {data['seconds']:.2f}s).")
        return
    parts = [f"{data['ran']} ran", f"{data['restored']} restored", f"{data['skipped']} up to date"]
    parts += [
        f"{data[key]} {what}"
        for key, what in (
            ("failed", "failed"),
            ("blocked", "blocked by a failure"),
            ("cancelled", "cancelled"),
            ("not_started", "not started"),
        )
        if data[key]
    ]
    click.echo(f"{stages}: {', '.join(parts)} in {data['seconds']:.2f}s.")


def json_events(event: WatchEvent) -> None:
    """One JSON object per line on stdout, flushed at once; messages with their advice."""
    data = event.to_dict()
    if event.error is not None:
        data["message"] = paragraph(event.error)
    if event.report is not None and event.report.cause is not None and "error" in data:
        data["error"] = stage_failure(event.report.detail, event.report.cause)
    _write(data)


def _write(data: dict) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class _JsonWarnings(logging.Handler):
    """The warnings of the layers below the CLI, also as `warning` events."""

    def emit(self, record: logging.LogRecord) -> None:
        _write(
            {"event": "warning", "time": round(record.created, 3), "message": record.getMessage()}
        )


def serve(request: WatchRequest, as_json: bool, quiet: bool) -> None:
    """Watch until Ctrl-C."""
    from pivot.watch.session import serve as watch

    if as_json:
        logging.getLogger("pivot").addHandler(_JsonWarnings(logging.WARNING))
    watch(request, json_events if as_json else TextEvents(quiet))
    if not as_json:
        click.echo("Stopped watching.")
