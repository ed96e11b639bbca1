"""What `gc` must keep: the outputs and run keys named by the lock files and tracked-data
records of the workspace and, read from git, of every local branch and tag (or of every
commit).

Git is asked in a fixed number of processes whatever the number of revisions: one
`for-each-ref` (or `rev-list --all`), one `cat-file --batch-check` resolving each
revision's `.pivot/stages` and `.pivot/tracked` folders to trees, one `ls-tree` per
distinct tree, and one `cat-file --batch` reading every distinct blob. Everything read
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
    folders = _folder_trees(project.root, revisions, prefix)
    blobs: dict[str, tuple[str, str]] = {}  # blob id -> (folder kind, path in the folder)
    where: dict[str, str] = {}  # blob id -> "rev:path" for messages
    for tree, (kind, rev) in folders.items():
        for oid, path in _ls_tree(project.root, tree):
            if oid not in blobs:
                blobs[oid] = (kind, path)
                where[oid] = f"{rev}:{prefix}{PIVOT_DIR}/{kind}/{path}"
    for oid, data in _read_blobs(project.root, list(blobs)):
        kind, path = blobs[oid]
        shown = where[oid]
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


def _folder_trees(root: pathlib.Path, revisions: list[str], prefix: str) -> dict[str, tuple]:
    """Distinct trees of `.pivot/stages` and `.pivot/tracked` over `revisions`: tree id ->
    (folder kind, first revision holding it)."""
    asked = [(rev, kind) for rev in revisions for kind in (STAGES, TRACKED)]
    lines = "".join(f"{rev}:{prefix}{PIVOT_DIR}/{kind}\n" for rev, kind in asked)
    out = _git(root, "cat-file", "--batch-check", stdin=lines.encode()).decode().splitlines()
    trees: dict[str, tuple[str, str]] = {}
    for (rev, kind), line in zip(asked, out, strict=True):
        parts = line.split()
        if len(parts) == 3 and parts[1] == "tree" and parts[0] not in trees:
            trees[parts[0]] = (kind, rev[:12])
    return trees


def _ls_tree(root: pathlib.Path, tree: str) -> list[tuple[str, str]]:
    """(blob id, path) of every file under `tree`."""
    found = []
    for entry in _git(root, "ls-tree", "-r", "-z", tree).split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        _, kind, oid = meta.split()
        if kind == b"blob":
            found.append((oid.decode(), os.fsdecode(path)))
    return found


def _read_blobs(root: pathlib.Path, oids: list[str]) -> list[tuple[str, bytes]]:
    """The contents of `oids`, read by one `git cat-file --batch`."""
    if not oids:
        return []
    out = _git(root, "cat-file", "--batch", stdin="".join(f"{o}\n" for o in oids).encode())
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
