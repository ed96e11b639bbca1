"""Lock files of a git revision, read with git plumbing (`rev-parse`, `ls-tree`,
`cat-file --batch`): no checkout, nothing written to the repository."""

from __future__ import annotations

import pathlib
import subprocess
from dataclasses import dataclass

from pivot.errors import CorruptFile, DefinitionError, PivotError, ProjectError
from pivot.project import PIVOT_DIR
from pivot.run.lockfile import Lock, parse_lock

MAX_LOCK_BYTES = 16 << 20  # a lock file is a few KiB; a bigger blob is not one
STAGES = f"{PIVOT_DIR}/stages/"


@dataclass
class Revision:
    """A git revision as the user named it, and the commit it resolved to."""

    name: str
    commit: str
    has_project: bool  # whether .pivot/ existed in that commit


class GitRepo:
    """The git repository holding a Pivot project (possibly in a subfolder of it)."""

    def __init__(self, project_root: pathlib.Path) -> None:
        self.cwd = project_root
        try:
            prefix = self._git("rev-parse", "--show-prefix").decode().strip()
        except PivotError:
            raise ProjectError(
                f"The project {project_root} is not in a git repository (or git is not "
                f"installed): comparing revisions reads them from git. Run `git init` and "
                f"commit the project, or compare nothing but the workspace.",
                path=project_root,
            ) from None
        self.prefix = prefix  # the project's folder in the repository, '' or 'a/b/'

    def _git(self, *args: str, stdin: bytes | None = None) -> bytes:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=self.cwd, input=stdin, capture_output=True, check=False
            )
        except FileNotFoundError:
            raise PivotError("git is not installed; comparing revisions needs it.") from None
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise PivotError(f"git {args[0]} failed: {message[-1] if message else 'no output'}")
        return proc.stdout

    def resolve(self, name: str) -> Revision:
        """The commit `name` (a branch, tag, `HEAD~3`, a hash) names; PivotError if none."""
        try:
            commit = self._git(
                "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"
            )
        except PivotError:
            raise DefinitionError(
                f"{name!r} is not a git revision of the repository at {self.cwd} (no such "
                f"branch, tag or commit). Name an existing one, such as HEAD, HEAD~1 or main."
            ) from None
        sha = commit.decode().strip()
        listed = self._git("ls-tree", "--full-tree", sha, "--", f"{self.prefix}{PIVOT_DIR}")
        return Revision(name, sha, bool(listed.strip()))

    def locks(self, rev: Revision) -> dict[str, Lock]:
        """Every lock file committed in `rev`, by stage id; a damaged one raises PivotError
        naming it."""
        base = f"{self.prefix}{STAGES}"
        listing = self._git("ls-tree", "-r", "-z", "--full-tree", rev.commit, "--", base)
        wanted: list[tuple[str, str]] = []
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, _, path = entry.decode("utf-8", errors="surrogateescape").partition("\t")
            _mode, kind, oid = meta.split()
            if kind == "blob" and path.endswith(".lock") and path.startswith(base):
                wanted.append((path[len(base) : -len(".lock")], oid))
        blobs = self._read_blobs([oid for _, oid in wanted])
        locks = {}
        for stage_id, oid in wanted:
            where = pathlib.Path(f"{rev.name}:{self.prefix}{STAGES}{stage_id}.lock")
            data = blobs.get(oid)
            if data is None:
                raise CorruptFile(
                    f"The lock file {where} is larger than a lock file can be.", path=where
                )
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptFile(f"The lock file {where} is not UTF-8 text.", path=where) from None
            locks[stage_id] = parse_lock(text, where)
        return locks

    def _read_blobs(self, oids: list[str]) -> dict[str, bytes]:
        """The content of each blob in one `git cat-file --batch`; those over the size
        limit are left out."""
        if not oids:
            return {}
        out = self._git("cat-file", "--batch", stdin="".join(f"{o}\n" for o in oids).encode())
        found: dict[str, bytes] = {}
        pos = 0
        for oid in oids:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            if len(header) != 3 or header[1] != b"blob":
                raise PivotError(f"git cat-file could not read the object {oid}.")
            size = int(header[2])
            body = out[end + 1 : end + 1 + size]
            pos = end + 1 + size + 1
            if size <= MAX_LOCK_BYTES:
                found[oid] = body
        return found
