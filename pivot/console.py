"""Terminal output: stage lines, summaries, warnings. Only this module styles text."""

from __future__ import annotations

import sys

import click

STATUS_STYLE = {
    "ran": ("ran", "green"),
    "skipped": ("skipped", None),
    "restored": ("restored", "cyan"),
    "failed": ("FAILED", "red"),
    "blocked": ("blocked", "yellow"),
}


def warn(message: str) -> None:
    click.echo(click.style("Warning: ", fg="yellow") + message, err=True)


def error(message: str) -> None:
    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)


def stage_line(stage_id: str, status: str, seconds: float, detail: str = "") -> None:
    label, color = STATUS_STYLE[status]
    timing = f"{seconds:6.2f}s" if status in ("ran", "failed") else ""
    note = f"  ({detail})" if detail and status in ("restored", "blocked", "skipped") else ""
    line = f"  {click.style(f'{label:<9}', fg=color)} {stage_id:<40} {timing}{note}"
    click.echo(line.rstrip())
    sys.stdout.flush()
