"""The project: its root (the top-most `.pivot/`), its state folders and its paths."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property

from pivot.errors import ProjectError, UnsafePath, not_writable, write_refusal

PIVOT_DIR = ".pivot"
# Names of the cache's temp files and folders in `.pivot/tmp/` (see pivot/cache/batch.py).
TEMP_PREFIX = "blob."
TRACKED_DIR = "tracked"  # tracked-data records, `.pivot/tracked/` (cache/tracked.py)
PIVOT_GITIGNORE = "/cache\n/tmp/\n/state.db\n/state.db-*\n/config.local.yaml\n"
# Pivot's own state: folders under `.pivot/` and under the cache, and files under
# `.pivot/`, that must never be links (a write or a gc delete through one lands wherever
# it points). `.pivot/cache` itself may be a link, to keep the cache on another disk.
STATE_DIRS = ("stages", "tmp")
CACHE_DIRS = ("objects", "runs", "packs", "quarantine", "tmp")
STATE_FILES = ("state.db", "tmp/command.lock", "cache/tmp/command.lock")


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
    # The commands that took the command lock on it in this process (`exclusive`): such a
    # command changes the project and must save its caches; one that only looks need not.
    changed_by: list[str] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def discover(cls, start: pathlib.Path | None = None) -> Project:
        """Find the project that contains `start` (default: the cwd)."""
        start = (start or pathlib.Path.cwd()).resolve()
        root = find_root(start)
        if root is None:
            raise ProjectError(
                f"No Pivot project found: neither {start} nor any directory above it holds "
                f"a {PIVOT_DIR}/ folder.",
                path=start,
                hint="init",
            )
        project = cls(root)
        project.check_state()
        return project

    def check_state(self) -> None:
        """Refuse a project whose own state folders are links or not folders, or whose
        state files are links: Pivot writes and `gc` deletes there, and a cloned repository
        can commit a link that sends those writes and deletes to any folder. Only
        `.pivot/cache` itself may be a link (to a folder)."""
        folders = [
            self.pivot_dir,
            *(self.pivot_dir / name for name in STATE_DIRS),
            *(self.cache_dir / name for name in CACHE_DIRS),
        ]
        for path in folders:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                self._refuse_state(path, "folder")
        for path in (self.pivot_dir / name for name in STATE_FILES):
            if os.path.islink(path):
                self._refuse_state(path, "file")
        if os.path.islink(self.cache_dir) and not self.cache_dir.is_dir():
            raise ProjectError(
                f"The cache {self.cache_dir} is a symbolic link to {os.readlink(self.cache_dir)}, "
                f"which is not a folder. Create that folder, or remove the link to keep the "
                f"cache in the project.",
                path=self.cache_dir,
            )

    def _refuse_state(self, path: pathlib.Path, kind: str) -> None:
        if not os.path.islink(path):
            raise ProjectError(
                f"{path} is not a {kind}, but Pivot keeps its own state there. Move it away "
                f"(the next command creates the {kind} again).",
                path=path,
            )
        top = path == self.pivot_dir
        fix = "" if top else "; Pivot creates it again"
        raise UnsafePath(
            f"{path} is a symbolic link (to {os.readlink(path)}), but Pivot keeps its own "
            f"state there and never follows a link in it: its writes and deletes (also by "
            f"garbage collection) would land in the folder the link points to (a cloned "
            f"repository may hold such a link to damage your files). Remove the link "
            f"(`rm {path}`){fix}. Only {self.cache_dir} itself may be a link, to keep the "
            f"cache on another disk.",
            path=path,
            hint="init-again" if top else None,
        )

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
        """Cache temp files and the command lock: in the cache when `.pivot/cache` is a
        link, so that a finished temp file is renamed into the cache on the same disk."""
        base = self.cache_dir if os.path.islink(self.cache_dir) else self.pivot_dir
        path = base / "tmp"
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
                raise ProjectError(
                    f"{holder} is running in {self.root} right now; `pivot {command}` would "
                    f"race with it. Wait for it to finish and try again.",
                    path=self.root,
                    command=command,
                ) from None
            self.changed_by.append(command)
            self._check_state_writable()
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

    def _check_state_writable(self) -> None:
        """Refuse a command that changes the project before it changes anything if it
        could not save its caches: the state db (or `.pivot/`, where sqlite makes its
        journal files) refuses writes."""
        refused = write_refusal(db_files(self.state_path), str(self.pivot_dir))
        if refused is not None:
            raise refused

    def stale_temps(self) -> list[pathlib.Path]:
        """Cache temp files and folders in `tmp/`, and the temps of atomic writes
        (`.NAME.XXXX.tmp`, `_fs.write_bytes` / `write_temp`) a killed command left among
        the lock files, the run records and the tracked-data records (only stale while the
        command lock is held). Linked folders below those are not entered; folders unchanged
        since a command found them clean are not listed again (`_swept`)."""
        from pivot._swept import temp_files

        found = list(self.tmp_dir.glob(f"{TEMP_PREFIX}*"))
        tops = [self.stages_dir, self.cache_dir / "runs", self.pivot_dir / TRACKED_DIR]
        found += map(pathlib.Path, temp_files(list(map(str, tops)), str(self.tmp_dir)))
        return sorted(found)

    def rel(self, path: str | os.PathLike[str], base: pathlib.Path | None = None) -> str:
        """Project-relative POSIX form of `path` (relative to `base`, default root)."""
        root = str(self.root)
        absolute = os.path.normpath(os.path.join(base or root, path))
        inside = root if root.endswith(os.sep) else root + os.sep
        if absolute != root and not absolute.startswith(inside):
            raise UnsafePath(
                f"The path {path} resolves to {absolute}, which is outside the project root "
                f"{self.root}. Pivot only tracks files inside the project; move the file "
                f"into the project or fix the path.",
                path=path,
            )
        posix = absolute[len(inside) :].replace(os.sep, "/") if absolute != root else "."
        if posix == ".":
            raise UnsafePath(
                f"The path {path} names the project root itself; name a file.", path=path
            )
        return posix

    def write_path(self, rel: str, what: str, make_parents: bool = False) -> pathlib.Path:
        """The absolute path at which to write or remove the tracked path `rel`.

        Refuses a `rel` that `safe_relpath` refuses, one whose parent folders include a
        symbolic link (wherever it points: a write or delete through it could land
        outside the project), and one in or at a Python virtual environment (a folder
        holding `pyvenv.cfg`: a file there, such as a `.pth`, runs with the next
        `python`). With `make_parents`, the missing folders are created, one at a time,
        never through a link.
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
                raise UnsafePath(
                    f"Refusing {what} {rel!r}: its folder {self.rel(folder)!r} is a symbolic "
                    f"link (to {os.readlink(folder)}). Pivot never writes or deletes through "
                    f"a symlinked folder, which can lead outside the project. Replace the link "
                    f"with a real folder, or name the path it points to.",
                    path=rel,
                )
            if not stat.S_ISDIR(st.st_mode):
                if not make_parents:
                    break
                raise UnsafePath(
                    f"Cannot write {what} {rel!r}: {self.rel(folder)!r} is a file, not a "
                    f"folder. Move or delete that file.",
                    path=rel,
                )
            self._refuse_venv(folder, rel, what)
        self._refuse_venv(self.root / rel, rel, what)
        return self.root / rel

    @contextlib.contextmanager
    def pinned_folder(self, rel: str, what: str) -> Iterator[pathlib.Path]:
        """The folder of the tracked path `rel` (after `write_path`), as a path that stays
        on that folder while the block runs, even if a symbolic link is swapped in for it or
        for a folder above it after the check: `/proc/self/fd/N` of a descriptor opened
        one folder at a time from the root, never following a link (one met raises
        UnsafePath). Where `/proc/self/fd` does not exist, the plain path."""
        parts = rel.split("/")[:-1]
        if not os.path.isdir("/proc/self/fd"):
            yield self.root.joinpath(*parts)
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                try:
                    inner = os.open(
                        part,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=fd,
                    )
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    folder = "/".join(parts[: i + 1])
                    raise UnsafePath(
                        f"Refusing {what} {rel!r}: its folder {folder!r} is no longer a "
                        f"folder (a symbolic link or a file took its place while Pivot was "
                        f"placing it). Pivot never writes through a symlinked folder; check "
                        f"what changed {folder!r} and run again.",
                        path=rel,
                    ) from None
                os.close(fd)
                fd = inner
            pinned = f"/proc/self/fd/{fd}"
            try:
                yield pathlib.Path(pinned)
            except OSError as exc:  # a refused write told with the folder's own path
                refused = not_writable(exc, {pinned: str(self.root.joinpath(*parts))})
                if refused is None:
                    raise
                raise refused from None
        finally:
            os.close(fd)

    def remove_output(self, rel: str, what: str) -> None:
        """Remove what is at the tracked path `rel` (after `write_path`), in the folder that
        was checked even if a symbolic link took its place or that of a folder above it
        since (`pinned_folder`): the entry is removed without following a link, a folder
        with `shutil.rmtree`, which never follows one either. A missing path is no error."""
        from pivot._fs import remove_path

        try:
            with self.pinned_folder(rel, what) as folder:
                remove_path(folder / rel.rsplit("/", 1)[-1])
        except FileNotFoundError:  # a folder on the way is missing: nothing to remove
            pass

    def _refuse_venv(self, folder: pathlib.Path, rel: str, what: str) -> None:
        if os.path.lexists(folder / VENV_MARKER):
            raise UnsafePath(
                f"Refusing {what} {rel!r}: {self.rel(folder)!r} is a Python virtual "
                f"environment (it holds {VENV_MARKER}), where a file can run code with the "
                f"next `python`. Pivot never writes or deletes there; keep outputs out of "
                f"virtual environments, and fix what names this path (a file you did not "
                f"write yourself may have been crafted to take over your Python).",
                path=rel,
            )


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
# `.pivot/` at the root; nor is or lies in a folder Python imports from without being
# asked (`site-packages`, `dist-packages`: a `.pth` file there runs with every `python`;
# `__pycache__`: a compiled module there can run instead of the reviewed source), nor is
# a virtual environment's `pyvenv.cfg`. Names are compared as the filesystems that
# ignore differences compare them (`_canonical`); their 8.3 short names are refused.
GIT_DIR = ".git"
VENV_MARKER = "pyvenv.cfg"
PYTHON_PARTS = frozenset({"site-packages", "dist-packages", "__pycache__", VENV_MARKER})
GIT_SHORT_NAME = re.compile(r"git~[0-9]+")
PIVOT_SHORT_NAME = re.compile(r"pivot~[0-9]+")
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15.1): HFS+
# ignores these in names, so `.g\u200cit` opens `.git` there.
_IGNORABLE_CLASS = (
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


@cache
def _ignorable() -> re.Pattern[str]:
    """`_IGNORABLE_CLASS` compiled on first use: its wide ranges take about 0.3 ms to
    compile, and the common paths (`_COMMON`) never need it."""
    return re.compile(_IGNORABLE_CLASS)


def _canonical(part: str) -> str:
    """The name a case-insensitive filesystem opens for `part`: without ignorable code
    points (HFS+), an NTFS stream suffix (`:...`) or trailing dots and spaces (Windows),
    case-folded."""
    return _ignorable().sub("", part).split(":", 1)[0].rstrip(". ").casefold()


# The common case, settled quickly: ASCII parts of letters, digits, '_', '-' and '.' that
# do not start with '.' (so no '.', '..', '.git', '.pivot', empty part, '~', ':', space,
# backslash, NUL or code point a filesystem ignores). Only the Python folders remain.
_COMMON = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
# Paths joined by NUL (which no path holds), each matching _COMMON.
_COMMON_JOINED = re.compile(rf"{_COMMON.pattern}(?:\0{_COMMON.pattern})*")


# Text every name of PYTHON_PARTS contains, in any case: a path without it names none.
_PYTHONISH = re.compile(r"packages|__pycache__|pyvenv", re.IGNORECASE)


def db_files(path: pathlib.Path) -> list[str]:
    """An sqlite database file `path` and the journal files sqlite makes beside it."""
    return [f"{path}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]


def safe_relpath(rel: str, what: str) -> str:
    """Return `rel` if it may name a tracked path, else raise naming `what`.

    The one check for every path Pivot did not compute itself (lock files, tree
    manifests, run records, remote indexes, a pipeline's declared paths): a plain relative
    POSIX path (no '..', '.', empty part, backslash or NUL, not absolute, encodable as a
    file name) outside `.pivot/` and not in or at any `.git`.
    """
    if rel in _ACCEPTED:
        return rel
    if not (
        _COMMON.fullmatch(rel)
        and (
            not _PYTHONISH.search(rel)
            or not any(p.rstrip(".").lower() in PYTHON_PARTS for p in rel.split("/"))
        )
    ):
        checked_relpath(rel, what)  # else `checked_relpath` could only accept it
    if len(_ACCEPTED) < _ACCEPTED_MAX and type(rel) is str:
        _ACCEPTED.add(rel)
    return rel


# Paths `safe_relpath` accepted in this process, so that one met again (a stage's output is
# the next stage's dependency, in its lock file and its declaration) is not checked again:
# the check depends on the string alone. Bounded: a tree manifest's names pass once.
_ACCEPTED: set[str] = set()
_ACCEPTED_MAX = 50_000


def safe_relpaths(rels: list[str], what: str) -> None:
    """`safe_relpath` of each of `rels` (raising for the first refused): one match of
    the whole list when every path is of the common kind, as the 100,000 file names of a
    folder usually are."""
    joined = "\0".join(rels)
    if (
        _COMMON_JOINED.fullmatch(joined)
        and joined.count("\0") == len(rels) - 1
        and not _pythonish(joined)
    ):
        return
    for rel in rels:
        safe_relpath(rel, what)


def _pythonish(ascii_text: str) -> bool:
    """`_PYTHONISH.search` of ASCII text, ten times faster on long text (plain substring
    searches of its lower case: the same answer for ASCII)."""
    low = ascii_text.lower()
    return "packages" in low or "__pycache__" in low or "pyvenv" in low


def checked_relpath(rel: str, what: str) -> str:
    """`safe_relpath` without its shortcut for the common case: every check, every time."""
    parts = rel.split("/")
    plain = bool(rel) and not rel.startswith("/") and "\\" not in rel and "\0" not in rel
    if not is_utf8(rel):
        raise UnsafePath(
            f"Refusing {what}: the name {rel!r} is not valid UTF-8 text. Pivot records paths "
            f"as UTF-8 (lock files, manifests, remote indexes), so such a name could not be "
            f"restored anywhere: rename the file to a UTF-8 name.",
            path=rel,
        )
    if not plain or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(
            f"Refusing {what}: {rel!r} is not a plain relative path inside the project "
            f"(absolute paths, '..', '.', empty parts, backslashes and NUL are never accepted "
            f"from lock files, manifests, run records or indexes).",
            path=rel,
        )
    folded = [_canonical(p) for p in parts]
    git = any(p == GIT_DIR or GIT_SHORT_NAME.fullmatch(p) for p in folded)
    if git or folded[0] == PIVOT_DIR or PIVOT_SHORT_NAME.fullmatch(folded[0]):
        place = "a .git folder, which git" if git else f"{PIVOT_DIR}/, which Pivot"
        raise UnsafePath(
            f"Refusing {what}: {rel!r} is or lies inside {place} manages (names are compared "
            f"as macOS and Windows compare them); Pivot never writes there. Fix what names "
            f"this path (a file you did not write yourself may have been crafted to take over "
            f"the repository).",
            path=rel,
        )
    python = sorted(PYTHON_PARTS.intersection(folded))
    if python:
        raise UnsafePath(
            f"Refusing {what}: {rel!r} is or lies in {python[0]}, which Python reads "
            f"without being asked (a file there can run code with the next `python`); Pivot "
            f"never writes there. Fix what names this path (a file you did not write yourself "
            f"may have been crafted to take over your Python).",
            path=rel,
        )
    return rel


def first_overlap(paths: Iterable[str]) -> tuple[str, str] | None:
    """Two of `paths` that name the same path, or of which one is a folder holding the
    other (in that order), if any: such paths cannot all be written."""
    seen: set[str] = set()
    listed = list(paths)
    for path in listed:
        if path in seen:
            return path, path
        seen.add(path)
    for path in listed:
        parts = path.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in seen:
                return folder, path
    return None


def is_utf8(rel: str) -> bool:
    """Whether `rel` is UTF-8 text (not a name `os.fsdecode` carried as lone surrogates)."""
    try:
        rel.encode("utf-8")
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
