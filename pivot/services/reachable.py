"""What `gc` must keep: the outputs and run keys named by the lock files and tracked-data
records of the workspace and, read from git, of every local branch and tag (or of every
commit).

Git is asked in three processes whatever the number of revisions: one `for-each-ref` (or
`rev-list --all`), one `cat-file --batch` that reads, in rounds, each revision's
`.pivot/stages` and `.pivot/tracked` trees and their distinct subtrees, and one
`cat-file --batch --buffer` that reads every distinct blob (a lock file identical on many
branches is read and checked once). Everything read
from git is validated like the workspace's files (`parse_lock`, `tracked.decode`).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pivot.cache import tracked
from pivot.cache.hashing import DIR, FILE, is_hash
from pivot.errors import PivotError
from pivot.project import PIVOT_DIR
from pivot.run.lockfile import SCHEMA_VERSION, load_locks

if TYPE_CHECKING:
    import pathlib

    from pivot.project import Project

WORKSPACE = "the workspace"
REFS = "the workspace and every local branch and tag"
ALL_COMMITS = "the workspace and every commit"
STAGES, TRACKED = "stages", tracked.FOLDER


@dataclass
class Live:
    """What the lock files and tracked records read keep alive, and from where."""

    run_keys: set[str] = field(default_factory=set)
    outputs: set[tuple[str, str]] = field(default_factory=set)
    revisions: int = 0  # git revisions read besides the workspace
    reach: str = WORKSPACE
    note: str = ""  # why git was not read, when it was asked for


def live_data(project: Project, reach: str) -> Live:
    """The run keys and (hash, kind) outputs the project needs, for `reach`: the
    workspace, plus every local branch and tag, or plus every commit."""
    live = Live(reach=reach)
    for lock in load_locks(project):
        live.run_keys.add(lock.run_key)
        live.outputs.update((o["hash"], o["kind"]) for o in lock.outs.values())
    live.outputs.update(tracked.live(tracked.load_all(project)))
    if reach == WORKSPACE:
        return live
    repo = _git_prefix(project.root)
    if repo is None:
        live.note = "not in a git repository with a commit: only the workspace was read"
        return live
    prefix = repo
    revisions = _revisions(project.root, reach)
    live.revisions = len(revisions)
    with _CatFile(project.root) as git:
        blobs = _files(git, revisions, prefix)
    for oid, data in _read_blobs(project.root, list(blobs)):
        kind, path, shown = blobs[oid]
        text = _text(data, shown)
        if kind == STAGES:
            if not path.endswith(".lock"):
                continue
            run_key, outputs = _lock_liveness(text, shown)
            live.run_keys.add(run_key)
            live.outputs.update(outputs)
        elif path.endswith(tracked.SUFFIX):
            record = tracked.decode(text, path[: -len(tracked.SUFFIX)], shown)
            live.outputs.add((record.hash, record.kind))
    return live


def _lock_liveness(text: str, shown: str) -> tuple[str, list[tuple[str, str]]]:
    """The run key and outputs (hash, kind) of a lock file read from git: all gc uses of
    it, each checked (its paths are checked where they are used: when that revision's
    outputs are placed)."""
    try:
        raw = json.loads(text)
        if raw.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unknown schema {raw.get('schema')!r}")
        run_key = raw["run_key"]
        outputs = [(out["hash"], out["kind"]) for out in raw["outs"].values()]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise PivotError(f"The lock file {shown} is unreadable ({exc}).") from None
    if not is_hash(run_key) or not all(is_hash(h) and k in (FILE, DIR) for h, k in outputs):
        raise PivotError(f"The lock file {shown} holds an invalid run key or output.")
    return run_key, outputs


def _text(data: bytes, shown: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PivotError(f"The file {shown} (read from git) is not UTF-8 text.") from None


def _git(root: pathlib.Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, input=stdin, capture_output=True, check=False
        )
    except FileNotFoundError:
        raise PivotError(
            "git is not installed; use --workspace to read the workspace only."
        ) from None
    if proc.returncode != 0:
        raise PivotError(
            f"git {args[0]} failed in {root}: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout


def _git_prefix(root: pathlib.Path) -> str | None:
    """The project root's path inside its git work tree ('' at the top, 'sub/' below), or
    None when the project is not in a git repository (or it has no commit)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--show-prefix", "--verify", "-q", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.splitlines()[0] if proc.stdout.strip() else ""


def _revisions(root: pathlib.Path, reach: str) -> list[str]:
    """Commit ids: the tips of local branches and tags, or every commit of every ref."""
    if reach == ALL_COMMITS:
        return _git(root, "rev-list", "--all").decode().split()
    out = _git(
        root,
        "for-each-ref",
        "--format=%(if)%(*objectname)%(then)%(*objectname)%(else)%(objectname)%(end)",
        "refs/heads",
        "refs/tags",
    )
    return list(dict.fromkeys(out.decode().split()))


def _files(git: _CatFile, revisions: list[str], prefix: str) -> dict[str, tuple[str, str, str]]:
    """Every distinct blob under `.pivot/stages` and `.pivot/tracked` of `revisions`:
    blob id -> (folder kind, path in the folder, "rev:path" for messages). Trees are
    read a level at a time, each distinct tree once."""
    asked = [(rev, kind) for rev in revisions for kind in (STAGES, TRACKED)]
    found = git.read([f"{rev}:{prefix}{PIVOT_DIR}/{kind}" for rev, kind in asked])
    # tree id -> (folder kind, path of the tree in the folder, the revision shown)
    level: dict[str, tuple[str, str, str]] = {}
    seen: set[str] = set()
    pending = [(data, (kind, "", rev[:12])) for (rev, kind), data in zip(asked, found, strict=True)]
    blobs: dict[str, tuple[str, str, str]] = {}
    while pending:
        level = {}
        for data, (kind, folder, rev) in pending:
            if data is None:
                continue
            shown = f"{rev}:{prefix}{PIVOT_DIR}/{kind}/{folder}"
            for mode, name, oid in _tree_entries(data, git.oid_size, shown):
                path = f"{folder}{name}"
                if mode == b"40000":
                    if oid not in seen:
                        seen.add(oid)
                        level[oid] = (kind, path + "/", rev)
                elif mode in (b"100644", b"100755") and oid not in blobs:
                    blobs[oid] = (kind, path, f"{rev}:{prefix}{PIVOT_DIR}/{kind}/{path}")
        pending = list(zip(git.read(list(level)), level.values(), strict=True))
    return blobs


def _tree_entries(data: bytes, size: int, shown: str) -> list[tuple[bytes, str, str]]:
    """(mode, name, object id) of each entry of the raw git tree object `shown` whose
    ids are `size` bytes long; a malformed tree raises PivotError naming it."""
    entries = []
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        nul = data.find(b"\0", space + 1)
        if space < 0 or nul < 0 or nul + 1 + size > len(data):
            raise PivotError(f"The git tree {shown} is malformed (read from git).")
        oid = data[nul + 1 : nul + 1 + size].hex()
        entries.append((data[pos:space], os.fsdecode(data[space + 1 : nul]), oid))
        pos = nul + 1 + size
    return entries


class _CatFile:
    """One `git cat-file --batch` process, asked in rounds (it answers each object as
    soon as it is asked: a round's last answer is not held back in a buffer)."""

    def __init__(self, root: pathlib.Path) -> None:
        try:
            self.proc = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            raise PivotError(
                "git is not installed; use --workspace to read the workspace only."
            ) from None
        self.root = root
        self.oid_size = 20  # bytes of an object id: 32 in a SHA-256 repository

    def __enter__(self) -> _CatFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc.wait()

    def read(self, names: list[str]) -> list[bytes | None]:
        """The content of each object `names` names (None for one that does not exist):
        the requests are written by a thread while the answers are read."""
        if not names:
            return []
        import threading

        request = "".join(f"{name}\n" for name in names).encode()
        failed: list[OSError] = []

        def write() -> None:
            try:
                self.proc.stdin.write(request)
                self.proc.stdin.flush()
            except OSError as exc:
                failed.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out = self.proc.stdout
        found: list[bytes | None] = []
        for _ in names:
            header = out.readline().split()
            if not header:
                writer.join()
                error = self.proc.stderr.read().decode(errors="replace").strip()
                raise PivotError(f"git cat-file failed in {self.root}: {error or failed}")
            if len(header) != 3:
                found.append(None)  # missing (or ambiguous)
                continue
            self.oid_size = len(header[0]) // 2
            size = int(header[2])
            data = out.read(size + 1)
            found.append(data[:size] if header[1] in (b"tree", b"blob") else None)
        writer.join()
        return found


def _read_blobs(root: pathlib.Path, oids: list[str]) -> list[tuple[str, bytes]]:
    """The contents of `oids`, read by one buffered `git cat-file --batch`."""
    if not oids:
        return []
    request = "".join(f"{o}\n" for o in oids).encode()
    out = _git(root, "cat-file", "--batch", "--buffer", stdin=request)
    found = []
    pos = 0
    for oid in oids:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3:
            continue  # missing
        size = int(header[2])
        found.append((oid, out[pos : pos + size]))
        pos += size + 1
    return found
