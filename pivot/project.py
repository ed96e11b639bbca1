"""The project: its root (the top-most `.pivot/`), its state folders and its paths."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from pivot.errors import PivotError

PIVOT_DIR = ".pivot"
# Names of the cache's temp files and folders in `.pivot/tmp/` (see pivot/cache/store.py).
TEMP_PREFIX = "blob."
PIVOT_GITIGNORE = "/cache/\n/tmp/\n/state.db\n/state.db-*\n/config.local.yaml\n"


def find_root(start: pathlib.Path) -> pathlib.Path | None:
    """Return the top-most directory at or above `start` that holds `.pivot/`."""
    found = None
    for candidate in (start, *start.parents):
        if (candidate / PIVOT_DIR).is_dir():
            found = candidate
    return found


@dataclass(frozen=True)
class Project:
    """Absolute locations inside one Pivot project."""

    root: pathlib.Path

    @classmethod
    def discover(cls, start: pathlib.Path | None = None) -> Project:
        """Find the project that contains `start` (default: the cwd)."""
        start = (start or pathlib.Path.cwd()).resolve()
        root = find_root(start)
        if root is None:
            raise PivotError(
                f"No Pivot project found: neither {start} nor any directory above it holds "
                f"a {PIVOT_DIR}/ folder. Run `pivot init` at the top of your project first."
            )
        return cls(root)

    @cached_property
    def pivot_dir(self) -> pathlib.Path:
        return self.root / PIVOT_DIR

    @cached_property
    def stages_dir(self) -> pathlib.Path:
        return self.pivot_dir / "stages"

    @cached_property
    def cache_dir(self) -> pathlib.Path:
        return self.pivot_dir / "cache"

    @cached_property
    def tmp_dir(self) -> pathlib.Path:
        path = self.pivot_dir / "tmp"
        path.mkdir(exist_ok=True)
        return path

    @cached_property
    def state_path(self) -> pathlib.Path:
        return self.pivot_dir / "state.db"

    @contextlib.contextmanager
    def exclusive(self, command: str, sweep: bool = True) -> Iterator[None]:
        """Hold the project's command lock, or fail at once if another command holds it.

        A POSIX record lock: it belongs to this process alone (processes it forks do not
        inherit it) and the kernel releases it when the process dies, however it dies.
        Every command that writes the cache holds it, so once it is held no temp file in
        `tmp/` is being written: the cache temp files (`blob.*`) an interrupted or killed
        command left are removed then (unless `sweep` is false).
        """
        import fcntl

        path = self.tmp_dir / "command.lock"
        with open(path, "a+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another pivot command"
                raise PivotError(
                    f"{holder} is running in {self.root} right now; `pivot {command}` would "
                    f"race with it. Wait for it to finish and try again."
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"`pivot {command}` (pid {os.getpid()})")
            handle.flush()
            if sweep:
                for leftover in self.stale_temps():
                    _remove(leftover)
            try:
                yield
            finally:
                handle.truncate(0)

    def stale_temps(self) -> list[pathlib.Path]:
        """Cache temp files and folders in `tmp/` (only stale while the lock is held)."""
        return sorted(self.tmp_dir.glob(f"{TEMP_PREFIX}*"))

    def rel(self, path: str | os.PathLike[str], base: pathlib.Path | None = None) -> str:
        """Project-relative POSIX form of `path` (relative to `base`, default root)."""
        absolute = pathlib.Path(os.path.normpath((base or self.root) / path))
        try:
            relative = absolute.relative_to(self.root)
        except ValueError:
            raise PivotError(
                f"The path {path} resolves to {absolute}, which is outside the project root "
                f"{self.root}. Pivot only tracks files inside the project; move the file "
                f"into the project or fix the path."
            ) from None
        posix = relative.as_posix()
        if posix == ".":
            raise PivotError(f"The path {path} names the project root itself; name a file.")
        return posix

    def write_path(self, rel: str, what: str, make_parents: bool = False) -> pathlib.Path:
        """The absolute path at which to write or remove the tracked path `rel`.

        Refuses a `rel` that `safe_relpath` refuses, and one whose parent folders include
        a symbolic link (wherever it points: a write or delete through it could land
        outside the project). With `make_parents`, the missing folders are created, one
        at a time, never through a link.
        """
        safe_relpath(rel, what)
        folder = self.root
        for part in rel.split("/")[:-1]:
            folder = folder / part
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                if not make_parents:
                    break  # nothing below exists
                with contextlib.suppress(FileExistsError):  # made by a concurrent checkout
                    os.mkdir(folder)
                st = os.lstat(folder)
            if stat.S_ISLNK(st.st_mode):
                raise PivotError(
                    f"Refusing {what} {rel!r}: its folder {self.rel(folder)!r} is a symbolic "
                    f"link (to {os.readlink(folder)}). Pivot never writes or deletes through "
                    f"a symlinked folder, which can lead outside the project. Replace the link "
                    f"with a real folder, or name the path it points to."
                )
            if not stat.S_ISDIR(st.st_mode):
                if not make_parents:
                    break
                raise PivotError(
                    f"Cannot write {what} {rel!r}: {self.rel(folder)!r} is a file, not a "
                    f"folder. Move or delete that file."
                )
        return self.root / rel


def _remove(path: pathlib.Path) -> None:
    """Remove a file or folder tree, if it is still there."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# No tracked path is or lies in a `.git` folder at any depth (git itself refuses them: a
# nested `.git` makes its folder a repository with its own config and hooks), nor in
# `.pivot/` at the root; compared case-insensitively, as macOS and Windows compare names.
GIT_DIR = ".git"


def safe_relpath(rel: str, what: str) -> str:
    """Return `rel` if it may name a tracked path, else raise naming `what`.

    The one check for every path Pivot did not compute itself (lock files, tree
    manifests, run records, remote indexes, a pipeline's declared paths): a plain relative
    POSIX path (no '..', '.', empty part, backslash or NUL, not absolute, encodable as a
    file name) outside `.pivot/` and not in or at any `.git`.
    """
    parts = rel.split("/")
    plain = bool(rel) and not rel.startswith("/") and "\\" not in rel and "\0" not in rel
    if not plain or any(p in ("", ".", "..") for p in parts) or not _encodable(rel):
        raise PivotError(
            f"Refusing {what}: {rel!r} is not a plain relative path inside the project "
            f"(absolute paths, '..', '.', empty parts, backslashes and NUL are never accepted "
            f"from lock files, manifests, run records or indexes)."
        )
    folded = [p.casefold() for p in parts]
    if GIT_DIR in folded or folded[0] == PIVOT_DIR:
        place = "a .git folder, which git" if GIT_DIR in folded else f"{PIVOT_DIR}/, which Pivot"
        raise PivotError(
            f"Refusing {what}: {rel!r} is or lies inside {place} manages; Pivot never writes "
            f"there. Fix what names this path (a file you did not write yourself may have been "
            f"crafted to take over the repository)."
        )
    return rel


def _encodable(rel: str) -> bool:
    try:
        os.fsencode(rel)
    except UnicodeEncodeError:
        return False
    return True


def init_project(directory: pathlib.Path) -> tuple[pathlib.Path, bool]:
    """Create `.pivot/` in `directory`; return its path and whether it was new."""
    pivot_dir = directory / PIVOT_DIR
    created = not pivot_dir.exists()
    (pivot_dir / "stages").mkdir(parents=True, exist_ok=True)
    gitignore = pivot_dir / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(PIVOT_GITIGNORE)
    return pivot_dir, created
