"""Errors that reach the user as one clear paragraph instead of a traceback."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator


class PivotError(Exception):
    """A problem with the user's project or input; its message says what to do."""

    exit_code = 1


class RemoteIncomplete(PivotError):
    """The remote answered, but lacks blobs it was expected to hold."""


class StageFailed(PivotError):
    """One or more stages raised or broke their contract during a run."""


class DamagedBlob(PivotError):
    """A local cache object whose bytes do not match its hash (it has been set aside)."""

    def __init__(self, message: str, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


class DiskFull(PivotError):
    """The device ran out of space (or quota) while Pivot wrote a file."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def writing(path: object) -> Iterator[None]:
    """Turn running out of space (or quota) while writing `path` into DiskFull."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise disk_full(path) from exc


def disk_full(path: object) -> DiskFull:
    return DiskFull(
        f"No space left on device while writing {path}. Free some space (`pivot gc` removes "
        f"cache objects no lock file needs) and run the command again; nothing half-written "
        f"was kept."
    )
