"""Per-stage lock files: `.pivot/stages/<pipeline>/<stage>.lock`, deterministic JSON."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot import _fs, _racy
from pivot.cache.hashing import DIR, FILE, is_hash
from pivot.define.metric_values import check_values
from pivot.errors import CorruptFile, PivotError
from pivot.project import PIVOT_DIR, Project, first_overlap, safe_relpath
from pivot.run.in_the_way import in_the_way
from pivot.untrusted import count

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pivot.define.stage import StageSpec

log = logging.getLogger(__name__)  # the CLI shows warnings; see pivot.cli.main
SCHEMA_VERSION = 1


@dataclass
class Lock:
    """What a stage last produced, and from what."""

    stage_id: str
    run_key: str
    fingerprint: dict[str, str]
    params: dict[str, Any]
    deps: dict[str, str]
    outs: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics file -> values

    def to_json(self) -> str:
        return (
            json.dumps(self.body(), indent=2, sort_keys=True, ensure_ascii=False, default=str)
            + "\n"
        )

    def body(self) -> dict[str, Any]:
        """The lock as its file's decoded JSON."""
        body = {
            "schema": SCHEMA_VERSION,
            "stage": self.stage_id,
            "run_key": self.run_key,
            "fingerprint": self.fingerprint,
            "params": self.params,
            "deps": self.deps,
            "outs": self.outs,
        }
        if self.metrics:  # absent otherwise, as in lock files written before metrics
            body["metrics"] = self.metrics
        return body


def lock_path(stages_dir: pathlib.Path, stage_id: str) -> pathlib.Path:
    return stages_dir / f"{stage_id}.lock"


def write_lock(stages_dir: pathlib.Path, lock: Lock) -> None:
    path = lock_path(stages_dir, lock.stage_id)
    _READ.pop(str(path), None)
    _FETCHED.pop(str(path), None)
    _fs.write_text(path, lock.to_json())


# Lock files already read by this process, by path: the file's stat key when it was read
# and the validated lock. A command reads a lock file in several places (the plan, the
# `.gitignore` upkeep, `status`'s other pipelines): the second read is one `stat`.
_READ: dict[str, tuple[tuple[int, int, int, int], Lock]] = {}
# Lock files read and validated by a helper process (`remember`), by path, until read.
_FETCHED: dict[str, tuple[tuple[int, ...], Any]] = {}
# A file changed less than this long ago may change again with the same stat key on a
# file system of coarse timestamps (git's "racy" entries): it is not memoised, unless the
# command's racy marker decides (`use_marker`).
_RACY_NS = 3_000_000_000
# The stages folder (with a trailing separator) whose lock files the racy marker judges,
# and the marker (`use_marker`).
_MARKED: tuple[str, _racy.Marker] | None = None


def read_lock(stages_dir: pathlib.Path, stage_id: str) -> Lock | None:
    """The stage's lock, or None when absent. Raises PivotError when it is unusable.

    A lock file this process read before is parsed again only if its size, mtime, ctime
    or inode changed (ctime: a rewrite that keeps size and mtime is still seen)."""
    name = f"{stages_dir}/{stage_id}.lock"  # os.path.join, without its cost per call
    try:
        fetched = _FETCHED.pop(name, None) if _FETCHED else None
        lock = None
        if fetched is not None and fetched[0] == _stat_key(os.stat(name)):
            key, lock = fetched[0], _handed_over(fetched[1], name)
        if lock is None:
            hit = _READ.get(name)
            if hit is not None and hit[0] == _stat_key(os.stat(name)):
                return _copy(hit[1])
            key, _, lock = read_validated(name)
    except FileNotFoundError:
        return None
    except OSError as exc:
        doing = f"reading the lock file of {stage_id}"
        blocked = in_the_way(exc, stages_dir.parent, doing, name)
        if blocked is not None:
            raise blocked from exc
        raise
    if key is not None:
        _READ[name] = (key, lock)
        return _copy(lock)
    return lock


def _handed_over(raw: Any, name: str) -> Lock | None:
    """The lock a helper process handed over for the lock file `name` (its decoded JSON),
    validated here; None when it does not validate: the file itself is then read, as the
    damage may be the hand-over's alone."""
    try:
        return lock_from_json(raw, name)
    except PivotError as exc:
        log.debug(f"The lock handed over for {name} is refused: {exc}")
        return None


def use_marker(stages_dir: pathlib.Path | str, tmp_dir: pathlib.Path | str) -> None:
    """Judge the lock files under `stages_dir` this process reads from disk from now on
    against a racy marker in `tmp_dir` (`pivot._racy`: made before the first such read) instead
    of the 3 s rule: a lock file whose mtime and ctime are before the marker's is memoised,
    one changed at or after it is not. Where the marker does not apply (it cannot be made,
    or is on another device), the 3 s rule holds."""
    global _MARKED
    _MARKED = (os.path.join(stages_dir, ""), _racy.Marker(str(tmp_dir)))


def read_validated(name: str) -> tuple[tuple[int, int, int, int] | None, Any, Lock]:
    """The lock file `name` read and validated: the stat key of what was read (None when
    it changed too recently to be memoised: see `use_marker`), its decoded JSON and the
    lock. Raises FileNotFoundError when it is absent, PivotError when it is unusable."""
    marked = _MARKED
    made = marked[1].made() if marked is not None and name.startswith(marked[0]) else None
    st, data = _read_file(name)  # after the marker
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFile(
            f"The lock file {name} is unreadable: not UTF-8 text ({exc}).", path=name
        ) from None
    raw = _decode(text, name)
    lock = lock_from_json(raw, name)
    settled = _racy.before(made, st)
    if settled is None:  # no marker for it: the 3 s rule
        settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS
    if settled:
        return _stat_key(st), raw, lock
    return None, raw, lock


def remember(rows: Iterable[tuple[str, tuple[int, ...], Any]]) -> None:
    """Keep lock files read and decoded by `read_validated` in another process (see
    `run.lock_prefetch`): rows of (name, stat key, decoded JSON). Each is handed out by
    the first `read_lock` of its file, only while the file's stat key is unchanged, and
    validated there by `lock_from_json` like a file read here (what another process
    hands over is untrusted too)."""
    _FETCHED.clear()
    for name, key, raw in rows:
        _FETCHED[name] = (tuple(key), raw)


def memoised() -> dict[str, tuple[tuple[int, int, int, int], Lock]]:
    """The lock files this process read and validated, by name: the stat key of what was
    read and the lock (never one changed too recently: see `use_marker`)."""
    return _READ


def unclaimed() -> list[tuple[str, tuple[int, ...], Any]]:
    """The rows given to `remember` that no `read_lock` asked for yet."""
    return [(name, key, raw) for name, (key, raw) in _FETCHED.items()]


def _read_file(name: str) -> tuple[os.stat_result, bytes]:
    """The file's stat and bytes, in a few system calls (no buffered file object: that
    costs more than parsing a lock file)."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a fifo: never waited on
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):  # a folder: in_the_way
            raise CorruptFile(
                f"The lock file {name} is not a regular file (a folder, fifo or device is "
                "in its place). Remove it, or restore it with `git checkout`, and run again.",
                path=name,
            )
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # it grew since the fstat: read the rest
            chunks = [data]
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            data = b"".join(chunks)
        return st, data
    finally:
        os.close(fd)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _copy(lock: Lock) -> Lock:
    """A copy of a memoised lock that its caller may change freely."""
    return Lock(
        lock.stage_id,
        lock.run_key,
        dict(lock.fingerprint),
        json.loads(json.dumps(lock.params)) if lock.params else {},
        dict(lock.deps),
        {path: dict(out) for path, out in lock.outs.items()},
        {path: dict(values) for path, values in lock.metrics.items()},
    )


def parse_lock(text: str, path: pathlib.Path | str) -> Lock:
    """The lock the text of the lock file `path` describes; CorruptFile if unusable."""
    return lock_from_json(_decode(text, path), path)


def _decode(text: str, path: pathlib.Path | str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptFile(f"The lock file {path} is unreadable ({exc}).", path=path) from exc


def lock_from_json(raw: Any, path: pathlib.Path | str) -> Lock:
    """The lock the decoded JSON `raw` of the lock file `path` describes, validated (its
    paths, hashes and metrics are untrusted); CorruptFile if unusable."""
    try:
        if raw.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unknown schema {raw.get('schema')!r}")
        lock = Lock(
            stage_id=str(raw["stage"]),
            run_key=str(raw["run_key"]),
            fingerprint={str(k): str(v) for k, v in raw["fingerprint"].items()},
            params=dict(raw["params"]),
            deps={str(k): str(v) for k, v in raw["deps"].items()},
            outs={
                str(k): {"hash": str(v["hash"]), "size": count(v["size"]), "kind": str(v["kind"])}
                for k, v in raw["outs"].items()
            },
            metrics={
                str(k): check_values(v, f"{k} in the lock file {path}")
                for k, v in raw.get("metrics", {}).items()
            },
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CorruptFile(f"The lock file {path} is unreadable ({exc}).", path=path) from exc
    if not is_hash(lock.run_key):
        raise CorruptFile(f"The lock file {path} holds an invalid run key.", path=path)
    for out_path, out in lock.outs.items():
        safe_relpath(out_path, f"the output path in the lock file {path}")
        if not is_hash(out["hash"]) or out["kind"] not in (FILE, DIR):
            raise CorruptFile(
                f"The lock file {path} holds an invalid entry for {out_path}.", path=path
            )
    for metrics_path in lock.metrics:
        if metrics_path not in lock.outs:
            raise CorruptFile(
                f"The lock file {path} holds metrics of {metrics_path}, no output.", path=path
            )
    for dep_path in lock.deps:
        safe_relpath(dep_path, f"the dependency path in the lock file {path}")
    return lock


def load_locks(project: Project) -> list[Lock]:
    """Every lock file of the project; an unusable one raises CorruptFile naming it."""
    locks = []
    for stage_id in all_locks(project.stages_dir):
        lock = read_lock(project.stages_dir, stage_id)
        if lock is not None:
            locks.append(lock)
    return locks


def check_disjoint(locks: Iterable[Lock]) -> None:
    """Refuse `locks` if two of their outputs are the same path or one lies in the other:
    checking them all out would overwrite one with the other."""
    locks = list(locks)
    clash = first_overlap(path for lock in locks for path in lock.outs)
    if clash is None:
        return
    folder, path = clash
    files = [
        f"{PIVOT_DIR}/stages/{lock.stage_id}.lock"
        for lock in locks
        if {folder, path} & set(lock.outs)
    ]
    named = (
        f"The lock file {files[0]} names"
        if len(files) == 1
        else f"The lock files {' and '.join(files)} name"
    )
    what = (
        f"the output {path!r} twice"
        if folder == path
        else f"the output {folder!r} and {path!r} inside it"
    )
    raise CorruptFile(
        f"{named} {what}: checking them out would overwrite one with the other, so "
        f"nothing was checked out.",
        path=files[0],
        hint="rewrite-lock",
    )


def declares(stage: StageSpec, outs: dict[str, dict[str, Any]]) -> bool:
    """Whether `outs` (of a lock or run record) are exactly the outputs `stage` declares."""
    return sorted(outs) == sorted(o.path for o in stage.outs)


def declared_locks(
    project: Project, stages: Iterable[StageSpec], every: bool = False
) -> list[Lock]:
    """The lock files of `stages` that record exactly the outputs each stage declares.

    Any other lock file (crafted, or written for an older version of the stage) is named
    in one warning and left out, so its outputs are never placed, fetched or pushed; an
    unusable one raises CorruptFile naming it. With `every`, the lock files of no stage in
    `stages` are read (an unusable one raises) and named too.
    """
    locks, seen = [], set()
    for stage in stages:
        seen.add(stage.id)
        lock = read_lock(project.stages_dir, stage.id)
        if lock is None:
            continue
        if declares(stage, lock.outs):
            locks.append(lock)
            continue
        declared = ", ".join(sorted(o.path for o in stage.outs)) or "none"
        log.warning(
            f"The lock file {lock_path(project.stages_dir, stage.id)} records the outputs "
            f"{', '.join(sorted(lock.outs)) or 'none'}, but stage {stage.id} declares "
            f"{declared}: the lock is stale and its outputs are left alone until the stage "
            f"runs again."
        )
    if every:
        for stage_id, path in all_locks(project.stages_dir).items():
            if stage_id not in seen and read_lock(project.stages_dir, stage_id) is not None:
                log.warning(
                    f"The lock file {path} belongs to no stage of the project: its outputs "
                    f"are left alone. Delete it if the stage is gone."
                )
    return locks


def live(locks: list[Lock]) -> tuple[set[str], list[tuple[str, str]]]:
    """What `locks` keep alive in the cache: their run keys and their outputs' (hash, kind)."""
    return {lock.run_key for lock in locks}, [
        (o["hash"], o["kind"]) for lock in locks for o in lock.outs.values()
    ]


def all_locks(stages_dir: pathlib.Path) -> dict[str, str]:
    """The path of every lock file in the project, by stage id."""
    found: dict[str, str] = {}
    folders = [""]  # below stages_dir, POSIX; one scandir each, no link followed
    while folders:
        folder = folders.pop()
        prefix = f"{folder}/" if folder else ""
        try:
            with os.scandir(os.path.join(stages_dir, folder)) as listing:
                entries = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(prefix + entry.name)
            elif entry.name.endswith(".lock") and entry.name != ".lock":
                found[prefix + entry.name[: -len(".lock")]] = entry.path
    return {sid: found[sid] for sid in sorted(found, key=lambda sid: sid.split("/"))}
