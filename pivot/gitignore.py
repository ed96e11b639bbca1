"""Keeping outputs and tracked data out of git: Pivot's lines in the `.gitignore` next to
each path (git's and DVC's convention), inside one marked block per file.

Only the lines between the markers are Pivot's: lines a user wrote above or below are
never changed, and a block that becomes empty is removed (and the file with it, if
nothing else is left). `gitignore: false` in `.pivot/config.yaml` turns this off.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pivot import _fs

if TYPE_CHECKING:
    from pivot.project import Project

BEGIN = "# >>> pivot: outputs and tracked data (lines managed by pivot)"
END = "# <<< pivot"
NAME = ".gitignore"
_SPECIAL = frozenset("*?[\\")


class _Switch:
    """Whether the config lets Pivot write `.gitignore` files, read on the first write
    (a command with nothing to change never reads the config)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.value: bool | None = None

    def __call__(self) -> bool:
        if self.value is None:
            from pivot.config import manage_gitignore

            self.value = manage_gitignore(self.project)
        return self.value


def line_for(name: str) -> str | None:
    """The gitignore line matching exactly the entry `name` of its folder (None for a
    name a gitignore line cannot hold: one with a line break)."""
    if "\n" in name or "\r" in name:
        return None
    if _SPECIAL.isdisjoint(name):
        escaped = name
    else:
        escaped = "".join(f"\\{c}" if c in _SPECIAL else c for c in name)
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return "/" + escaped


def _split(text: str) -> tuple[list[str], list[str], list[str]]:
    """The user's lines before the block, the block's lines, the user's lines after."""
    lines = text.splitlines()
    if BEGIN not in lines:
        return lines, [], []
    start = lines.index(BEGIN)
    end = lines.index(END, start) if END in lines[start:] else len(lines)
    return lines[:start], lines[start + 1 : end], lines[end + 1 :]


def _update(project: Project, folder: str, add: set[str], drop: set[str], allowed: _Switch) -> None:
    """Add the lines `add` to, and drop the lines `drop` from, the block of the
    `.gitignore` in the project folder `folder` (if `allowed()`, asked only when the file
    would change)."""
    file = project.root / folder / NAME
    if os.path.islink(file) or (os.path.lexists(file) and not os.path.isfile(file)):
        return  # not a file Pivot writes through
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (UnicodeDecodeError, OSError):
        return
    before, block, after = _split(text)
    wanted = (set(block) | add) - drop
    wanted -= set(before) | set(after)  # already ignored by the user's own line
    new_block = sorted(line for line in wanted if line)
    lines = [*before, BEGIN, *new_block, END, *after] if new_block else [*before, *after]
    new_text = "\n".join(lines) + "\n" if any(line.strip() for line in lines) else ""
    if new_text == text or not allowed():
        return
    if not new_text:
        file.unlink(missing_ok=True)
        return
    if not os.path.isdir(file.parent):
        return
    _fs.write_text(file, new_text)


def _by_folder(paths: Iterable[str]) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = {}
    for path in paths:
        folder, name = posixpath.split(path)
        line = line_for(name)
        if line is not None:
            folders.setdefault(folder, set()).add(line)
    return folders


def add(project: Project, paths: Iterable[str]) -> None:
    """List each project path in the `.gitignore` next to it (the config is read only if
    a file would change)."""
    allowed = _Switch(project)
    for folder, lines in _by_folder(paths).items():
        _update(project, folder, lines, set(), allowed)


def remove(project: Project, paths: Iterable[str]) -> None:
    """Drop each project path's line from Pivot's block next to it."""
    allowed = _Switch(project)
    for folder, lines in _by_folder(paths).items():
        _update(project, folder, set(), lines, allowed)


def prune(
    project: Project,
    folders: Iterable[str],
    owned: Iterable[str],
    more_owned: Callable[[], Iterable[str]] = tuple,
) -> None:
    """Drop Pivot's lines, from the `.gitignore` files of `folders`, for every path that is
    neither in `owned` nor in `more_owned()` (asked only when some line would go)."""
    kept = _by_folder(owned)
    stale: dict[str, set[str]] = {}
    for folder in sorted(set(folders)):
        try:
            text = (project.root / folder / NAME).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, OSError):
            continue
        _, block, _ = _split(text)
        lines = set(block) - kept.get(folder, set())
        if lines:
            stale[folder] = lines
    if not stale:
        return
    for folder, lines in _by_folder(more_owned()).items():
        if folder in stale:
            stale[folder] -= lines
    allowed = _Switch(project)
    for folder, lines in stale.items():
        if lines:
            _update(project, folder, set(), lines, allowed)
