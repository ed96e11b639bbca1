"""Warnings and errors on stderr: the one channel for messages raised deep in a command."""

from __future__ import annotations

import click


def warn(message: str) -> None:
    click.echo(click.style("Warning: ", fg="yellow") + message, err=True)


def error(message: str) -> None:
    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)
