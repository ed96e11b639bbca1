"""Warnings and errors on stderr. The layers below the CLI never print: they log warnings
to the `pivot` logger, which `show_warnings` routes here."""

from __future__ import annotations

import logging

import click


def warn(message: str) -> None:
    click.echo(click.style("Warning: ", fg="yellow") + message, err=True)


def error(message: str) -> None:
    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)


class _Warnings(logging.Handler):
    """Shows each warning the `pivot` logger receives as a `Warning: ...` line."""

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def show_warnings() -> None:
    """Route the warnings of the layers below the CLI to stderr (once per process)."""
    logger = logging.getLogger("pivot")
    if not any(isinstance(h, _Warnings) for h in logger.handlers):
        logger.addHandler(_Warnings(logging.WARNING))
        logger.propagate = False
