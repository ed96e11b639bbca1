"""Errors that reach the user as one clear paragraph instead of a traceback."""

from __future__ import annotations


class PivotError(Exception):
    """A problem with the user's project or input; its message says what to do."""

    exit_code = 1


class RemoteIncomplete(PivotError):
    """The remote answered, but lacks blobs it was expected to hold."""


class StageFailed(PivotError):
    """One or more stages raised or broke their contract during a run."""
