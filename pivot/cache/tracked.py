"""Tracked-data records: raw data the user tracks (`pivot track`), one small JSON file per
path under `.pivot/tracked/`, committed to git.

A record names its path, hash, size and kind; its file is `.pivot/tracked/<path>.json`,
so that records of different paths never touch the same file (merges do not conflict)
and the same data always writes the same bytes (sorted keys, no timestamps). Records are
read from a repository anyone can commit to: every field is checked, the path must be
the one the file's location names and pass `safe_relpath`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot import _fs
from pivot.cache.hashing import DIR, FILE, is_hash
from pivot.errors import PivotError
from pivot.project import PIVOT_DIR, TRACKED_DIR, first_overlap, safe_relpath
from pivot.untrusted import count

if TYPE_CHECKING:
    from pivot.project import Project

SCHEMA = 1
SUFFIX = ".json"
FOLDER = TRACKED_DIR


class Tracked(NamedTuple):
    """One tracked path and the content recorded for it."""

    path: str
    hash: str
    size: int
    kind: str

    @property
    def out(self) -> dict[str, Any]:
        """The record as a lock file's output entry."""
        return {"hash": self.hash, "size": self.size, "kind": self.kind}

    @property
    def outs(self) -> dict[str, dict[str, Any]]:
        return {self.path: self.out}

    @property
    def stage_id(self) -> str:
        return "tracked data"

    def to_json(self) -> str:
        body = {"schema": SCHEMA, **self.out, "path": self.path}
        return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def folder(project: Project) -> pathlib.Path:
    """`.pivot/tracked`, refused when it is a link (records are never read or written
    through one: a cloned repository can commit such a link)."""
    base = project.pivot_dir / FOLDER
    if os.path.islink(base):
        raise PivotError(
            f"{PIVOT_DIR}/{FOLDER} is a symbolic link (to {os.readlink(base)}); Pivot never "
            f"reads or writes its records through one. Replace it with a real folder."
        )
    return base


def record_file(project: Project, path: str) -> pathlib.Path:
    """Where the record of the project path `path` lives."""
    return folder(project) / (path + SUFFIX)


def shown(project: Project, file: pathlib.Path) -> str:
    """A record file as the user sees it: relative to the project root."""
    return file.relative_to(project.root).as_posix()


def decode(text: str, path: str, file: str) -> Tracked:
    """The record in `text`, read from `file`, which must be the record of `path`."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("schema") != SCHEMA:
            raise ValueError(f"unknown schema {raw.get('schema')!r}")
        unknown = sorted(set(raw) - {"schema", "path", "hash", "size", "kind"})
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        record = Tracked(raw["path"], raw["hash"], count(raw["size"]), raw["kind"])
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise PivotError(f"The tracked-data record {file} is unreadable ({exc}).") from None
    if not isinstance(record.path, str) or record.path != path:
        raise PivotError(
            f"The tracked-data record {file} names the path {record.path!r}, but its location "
            f"says {path!r}: it was moved or edited by hand."
        )
    safe_relpath(path, f"the tracked path in {file}")
    if not is_hash(record.hash) or record.kind not in (FILE, DIR):
        raise PivotError(f"The tracked-data record {file} holds an invalid hash or kind.")
    return record


def read(project: Project, path: str) -> Tracked | None:
    """The record of `path`, or None when it is not tracked; a damaged one raises."""
    file = record_file(project, path)
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise PivotError(
            f"The tracked-data record {shown(project, file)} is unreadable: not UTF-8 text."
        ) from None
    return decode(text, path, shown(project, file))


def load_all(project: Project) -> dict[str, Tracked]:
    """Every tracked-data record of the project, by path; a damaged one raises naming it,
    and so do two records of which one lies in the other's folder."""
    base = folder(project)
    if not os.path.isdir(base):
        return {}
    records: dict[str, Tracked] = {}
    for file in sorted(base.rglob(f"*{SUFFIX}")):
        if file.is_symlink() or not file.is_file():
            raise PivotError(
                f"{shown(project, file)} is not a regular file; tracked-data records are "
                f"plain files. Remove it."
            )
        path = file.relative_to(base).as_posix()[: -len(SUFFIX)]
        record = read(project, path)
        if record is not None:
            records[path] = record
    clash = first_overlap(records)
    if clash is not None:
        raise PivotError(
            f"The tracked-data records of {clash[0]!r} and {clash[1]!r} overlap (one lies in "
            f"the other): remove one of {PIVOT_DIR}/{FOLDER}/{clash[1]}{SUFFIX} and "
            f"{PIVOT_DIR}/{FOLDER}/{clash[0]}{SUFFIX}."
        )
    return records


def write(project: Project, record: Tracked) -> bool:
    """Write `record`; returns whether the file changed."""
    file = record_file(project, record.path)
    text = record.to_json()
    try:
        if file.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    file.parent.mkdir(parents=True, exist_ok=True)
    _fs.write_text(file, text)
    return True


def remove(project: Project, path: str) -> None:
    """Delete the record of `path` and the folders that held only it."""
    file = record_file(project, path)
    file.unlink()
    base = folder(project)
    parent = file.parent
    while parent != base and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def covering(records: dict[str, Tracked], path: str) -> Tracked | None:
    """The record of `path` or of a folder holding it."""
    parts = path.split("/")
    for i in range(len(parts), 0, -1):
        record = records.get("/".join(parts[:i]))
        if record is not None:
            return record
    return None


def live(records: dict[str, Tracked]) -> list[tuple[str, str]]:
    """What the records keep alive in the cache: (hash, kind) of each."""
    return [(r.hash, r.kind) for r in records.values()]
