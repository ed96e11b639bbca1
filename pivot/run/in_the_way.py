"""Something other than Pivot standing where Pivot keeps its own state under `.pivot/`
(a file where a lock folder goes, a folder where a lock file goes): told as a
`ProjectError` naming it and what to do, never as an internal error."""

from __future__ import annotations

import os
import pathlib

from pivot.errors import ProjectError

_KINDS = (FileExistsError, NotADirectoryError, IsADirectoryError)


def in_the_way(
    exc: BaseException, pivot_dir: pathlib.Path, doing: str, name: str | None = None
) -> ProjectError | None:
    """The error to raise instead of `exc` (raised while `doing` something with the path
    `name`, else the one `exc` names, under `pivot_dir`, `.pivot/`) when a file stands
    where Pivot needs a folder, or a folder where it needs a file; None for any other
    failure."""
    if not isinstance(exc, _KINDS):
        return None
    # A rename names its destination second: the path in the way.
    name = name if name is not None else (exc.filename2 or exc.filename)
    if name is None:
        return None
    path = pathlib.Path(os.fsdecode(name))
    if pivot_dir not in path.parents:
        return None
    root = pivot_dir.parent
    for candidate in (path, *path.parents):
        if candidate == pivot_dir:
            return None
        if not os.path.lexists(candidate):
            continue
        is_dir = os.path.isdir(candidate)
        if is_dir and not (candidate == path and isinstance(exc, IsADirectoryError)):
            continue
        rel = candidate.relative_to(root).as_posix()
        what, needed = ("a folder", "a file") if is_dir else ("a file", "a folder")
        return ProjectError(
            f"Stopped while {doing}: {rel} is {what}, where Pivot keeps {needed} of its own "
            f"state. Something other than Pivot put it there: a stage writing outside its "
            f"declared outputs into .pivot/ (declared outputs are never inside .pivot/), or "
            f"a copy or merge of .pivot/. Move {rel} out of .pivot/ (or delete it) and run "
            f"the command again.",
            path=rel,
        )
    return None
