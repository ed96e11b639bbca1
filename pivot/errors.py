"""Errors that reach the user as one clear paragraph instead of a traceback.

Each class says what kind of thing went wrong and carries the data that names it (a path,
a stage, a remote, a digest). A message says what is wrong; the advice that names a
`pivot` command is added by the command line (`pivot/cli/advice.py`), keyed by the class
and by `hint`, so the layers below the CLI never name commands.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Self, TypeVar


class PivotError(Exception):
    """A problem with the user's project or input, told in one paragraph.

    `hint` names the advice the CLI adds after the message (a key of
    `pivot.cli.advice.HINTS`, formatted with the error's attributes); None for none.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def reworded(self, message: str) -> Self:
        """The same error (class, data, hint) told with `message` (which usually quotes
        this one's)."""
        return _rebuilt(type(self), (message,), vars(self))

    def __reduce__(self):
        # Pickled (to cross a process boundary) as its class, message and data, whatever
        # its constructor takes.
        return _rebuilt, (type(self), self.args, vars(self))


def _rebuilt(cls: type[E], args: tuple, data: dict) -> E:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(data)
    return error


E = TypeVar("E", bound=PivotError)


class DefinitionError(PivotError):
    """Something the user wrote is invalid: a pipeline, stage, param, target, remote setting
    or config value. `path` is the file it is in (if known), `stage` the stage id, `remote`
    the remote's name."""

    def __init__(
        self,
        message: str,
        *,
        path: object = None,
        stage: str | None = None,
        remote: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.stage = stage
        self.remote = remote


class CorruptFile(PivotError):
    """A file Pivot read from disk is damaged or was edited by hand: a lock file, a tree
    manifest, a local pack index, a run record, a config file. `path` names it (or what it
    is, when it has no path of its own; None when only a value read from it is known)."""

    def __init__(self, message: str, *, path: object = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class UnsafePath(PivotError):
    """A path Pivot refuses to write, delete or follow: outside the project, through a
    symbolic link, into `.git/`, `.pivot/` or a virtual environment. `path` names it."""

    def __init__(self, message: str, *, path: object, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class ProjectError(PivotError):
    """The project itself cannot be used now: none found above `path`, its `.pivot/` state
    is not what Pivot made, or another command holds its lock (`command` is the one
    refused)."""

    def __init__(
        self, message: str, *, path: object, command: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.command = command


class MissingPackage(PivotError):
    """An optional Python package a feature needs is not installed (`package`)."""

    def __init__(self, message: str, *, package: str) -> None:
        super().__init__(message)
        self.package = package


class StageFailed(PivotError):
    """One or more stages raised or broke their contract during a run (`stages`: the ids
    of the failed and blocked stages)."""

    def __init__(self, message: str, *, stages: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.stages = stages


class RemoteError(PivotError):
    """A remote cannot serve a command. `remote` is its configured name, `display` its name
    and redacted url as messages show it."""

    def __init__(
        self, message: str, *, remote: str, display: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.remote = remote
        self.display = display or remote


class RemoteUnreachable(RemoteError):
    """The remote could not be opened or did not answer: no such folder or bucket, refused
    credentials, an unreachable endpoint, a missing protocol package."""


class RemoteIncomplete(RemoteError):
    """The remote answered, but lacks blobs it was expected to hold (`missing`: digests)."""

    def __init__(
        self,
        message: str,
        *,
        remote: str,
        display: str | None = None,
        missing: tuple[str, ...] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, remote=remote, display=display, hint=hint)
        self.missing = missing


class RemoteCorrupt(RemoteError):
    """An object on the remote is damaged: a pack shorter than its index says, a blob that
    does not match its hash, an index that does not decode (`key`: the object)."""

    def __init__(
        self,
        message: str,
        *,
        remote: str,
        display: str | None = None,
        key: str | None = None,
        digest: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, remote=remote, display=display, hint=hint)
        self.key = key
        self.digest = digest


class CacheCorrupt(PivotError):
    """The local cache holds damaged data: a blob (`digest`) that does not match its hash or
    a manifest that disagrees with its objects, for the output `path` (if known)."""

    def __init__(
        self,
        message: str,
        digest: str | None = None,
        *,
        path: object = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.digest = digest
        self.path = path


class DamagedBlob(CacheCorrupt):
    """A local cache object whose bytes do not match its hash (it has been set aside);
    `path` is the output it was read for, if known."""

    def __init__(
        self, message: str, digest: str, *, path: object = None, hint: str | None = None
    ) -> None:
        super().__init__(message, digest, path=path, hint=hint)


class DiskFull(PivotError):
    """The device ran out of space (or quota) while Pivot wrote `path`; nothing half-written
    was kept."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"No space left on device while writing {path}; nothing half-written was kept.",
            hint="disk-full",
        )
        self.path = path


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NotWritable(PivotError):
    """Pivot may not write in `folder` (its permissions or owner, an immutable attribute, a
    read-only file system); nothing half-written was kept (every write Pivot makes is a
    temp file renamed into place)."""

    def __init__(self, folder: str, reason: str, fix: str, action: str = "write in") -> None:
        super().__init__(
            f"Cannot {action} {folder} ({reason}): {fix}, and run the command again. "
            f"Nothing half-written was kept."
        )
        self.folder = folder
        self.reason = reason


# What each refusal to write is called, and what to do about it (`{q}`: the folder, quoted).
NOT_PERMITTED = {
    errno.EACCES: (
        "permission denied",
        "fix its permissions or owner (`chmod u+{rw} {q}`, or `chown` it to the user running "
        "Pivot)",
    ),
    errno.EPERM: (
        "operation not permitted",
        "it may be marked immutable or append-only (`lsattr -d {q}` shows it, `chattr -i "
        "{q}` clears it) or its owner may forbid it: make it writable",
    ),
    errno.EROFS: (
        "read-only file system",
        "remount it read-write, or move the project (or its cache: `.pivot/cache` may be "
        "a link to a folder on another disk) to a writable disk",
    ),
}


def not_writable(exc: BaseException, aliases: dict[str, str] | None = None) -> NotWritable | None:
    """The NotWritable an OSError of a refused write (EACCES, EPERM, EROFS) naming a file
    stands for, naming the folder it could not write in (or the existing file it could
    not open, or the existing folder it may not list: a dep it reads; a writable file's
    folder that refuses writes, which refused its removal); None for any other error.
    `aliases`: a path prefix the error may name a folder by (a pinned `/proc/self/fd/N`)
    and the folder's own path. The place is shown relative to the working folder when
    inside it."""
    import os
    import shlex

    if not isinstance(exc, OSError) or exc.errno not in NOT_PERMITTED or not exc.filename:
        return None
    renamed = bool(exc.filename2)  # a rename is refused by a folder of either name
    places: list[str] = []
    a_file = False  # an existing file refused (to be opened): not its folder
    unreadable = False  # an existing folder that may not be listed (a dep read): not a write
    for name in (exc.filename, exc.filename2):
        if not name or isinstance(name, int):
            continue
        path = os.path.abspath(os.fsdecode(name))
        for alias, real in (aliases or {}).items():
            if path == alias or path.startswith(alias + "/"):
                path = real + path[len(alias) :]
        a_file = (
            not renamed
            and exc.errno != errno.EROFS  # the file system refuses, not the file
            and os.path.lexists(path)
            and not os.path.isdir(path)
            # a writable file in a folder that refuses writes: its removal was refused
            and not (os.access(path, os.W_OK) and not os.access(os.path.dirname(path), os.W_OK))
        )
        a_dir = not renamed and os.path.isdir(path)
        unreadable = a_dir and exc.errno == errno.EACCES and not os.access(path, os.R_OK | os.X_OK)
        place = path if a_file or a_dir else os.path.dirname(path)
        relative = os.path.relpath(place)
        outside = relative in (".", "..") or relative.startswith("../")
        shown = place if outside else relative
        if shown not in places:
            places.append(shown)
    if not places:
        return None
    reason, fix = NOT_PERMITTED[exc.errno]
    rw, action = ("rw", "open") if a_file else ("rx", "read") if unreadable else ("w", "write in")
    fix = fix.format(q=shlex.quote(places[0]), rw=rw)
    return NotWritable(" or ".join(places), reason, fix, action)


def write_refusal(files: list[str], folder: str) -> NotWritable | None:
    """The NotWritable for the first of `files` (those that exist) that may not be opened
    for writing, else for `folder` if no file may be made in it; None when all may be
    written. Checked with `access` first; only a refusal is then told by trying (each file
    opened, changing nothing; a probe file made in `folder` and removed)."""
    import os

    existing = [f for f in files if os.path.lexists(f)]
    if os.access(folder, os.W_OK) and all(os.access(f, os.W_OK) for f in existing):
        return None
    import tempfile  # only now: 30 modules a command that may write never needs

    for file in existing:
        try:
            os.close(os.open(file, os.O_WRONLY | os.O_NOFOLLOW))
        except OSError as exc:
            found = not_writable(exc)
            if found is not None:
                return found
    try:
        handle, probe = tempfile.mkstemp(prefix=".probe.", dir=folder)
    except OSError as exc:
        return not_writable(exc)
    os.close(handle)
    os.unlink(probe)
    return None


@contextlib.contextmanager
def writing(path: object) -> Iterator[None]:
    """Turn running out of space (or quota) while writing `path` into DiskFull."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise DiskFull(path) from exc
