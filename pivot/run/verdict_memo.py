"""The verdict memo: the last "every stage is up to date" of a `pivot run`, kept in one file
(`verdict.msgpack` in the project's tmp folder), so that the next identical no-op skips
the plan after discovery.

It holds one verdict: a key (`command_key`: the memo's format, Pivot's and Python's
versions, the interpreter, the command's options, the working folder, and
`definition_digest`, the stages as discovery made them with every runtime value their
code fingerprints could read) and the stat keys (size, mtime, ctime, inode, device;
absent is a key of its own) of every file and folder the verdict rests on: the source
files the fingerprints read, every module file loaded, the folders on `sys.path`, the
config files, the lock files and their folders, the tracked-data records and their
folders, the `.gitignore` files the run looked after, and every dep and output; a dep or
output that is a folder is hashed again on replay (through its directory snapshot) and
compared with the hash its lock file records. A memo written by a `pivot run` started as a
program also holds that command line's replay entry (`Replay`): a key of the command line
itself (`argv_key`), the scope it asked for and how it prints, so that the next identical
command can be answered before click and the command modules load
(`services.noop_replay`). `store` writes it only when the run decided
that every stage is up to date and did nothing else, and only when every stat key it
records is settled (`pivot._racy`: changed before the command's marker; without a marker,
more than 3 s before it). `hit` answers True only when the key and every stat key are the
same now. Anything else (absent, damaged, of another shape, of another project, of
another format) is a miss: the full run, which removes the memo before it changes
anything (`invalidate`).
"""

from __future__ import annotations

import array
import contextlib
import os
import pathlib
import stat as stat_mod
import sys
import time
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot import _racy
from pivot._fs import read_own_file, write_bytes
from pivot.errors import DiskFull
from pivot.fingerprint.canonical import Canon, dotted_name, loader_text, text_hash

if TYPE_CHECKING:
    from pivot.define.stage import StageSpec

NAME = "verdict.msgpack"
FORMAT = "pivot-verdict-memo-2"
_ABSENT = (-1, -1, -1, -1, -1)
_WALL_RULE_NS = 3_000_000_000  # without a racy marker: changed more than 3 s before it
_MAX_BYTES = 512 * 1024 * 1024
_MAX_ENTRIES = 5_000_000
_HEX64 = frozenset("0123456789abcdef")
VIEWS = frozenset({"lines", "quiet", "json"})  # how a replayed run prints (`Replay.view`)
# Module globals that say where a module came from, not what its code reads.
_IMPORT_STATE = frozenset({"__builtins__", "__loader__", "__spec__", "__cached__"})


class Unbounded(Exception):
    """A runtime value too large to put into a digest: no memo."""


def stat_key(path: str, follow: bool = True) -> tuple[int, int, int, int, int]:
    """(size, mtime, ctime, inode, device) of `path`, or the absent key."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except (OSError, ValueError):
        return _ABSENT
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def command_key(options: Iterable[Any], cwd: str, definition: str) -> str:
    """The memo's key: its format, Pivot's place (its version is in the stat keys of its
    module files, which `store` records), Python, the interpreter, the command's options,
    the working folder relative to the project root, Pivot's environment variables and
    the definition digest."""
    from pivot.fingerprint.canonical import canonical_json

    env = sorted((k, v) for k, v in os.environ.items() if k.startswith("PIVOT"))
    body = [
        FORMAT,
        __file__,  # Pivot's version: its module files' stat keys are recorded too
        sys.implementation.name,
        list(sys.version_info),
        sys.executable,
        list(options),
        cwd,
        list(sys.path),
        [list(pair) for pair in env],
        definition,
    ]
    return text_hash(canonical_json(body))


def argv_key(argv: list[str], cwd: str, definition: str = "") -> str:
    """The replay key of a command line: `command_key` of the words after the program's
    name and the CPU count (a default of `--jobs`) in place of the parsed options; without
    `definition`, the part known before the pipelines load."""
    return command_key(["argv", list(argv), os.cpu_count()], cwd, definition)


def is_key(value: object) -> bool:
    """Whether `value` is a key as `command_key` makes them: 64 lowercase hex digits."""
    return type(value) is str and len(value) == 64 and _HEX64.issuperset(value)


def definition_digest(stages: list[StageSpec], root: pathlib.Path) -> str:
    """A digest of the stages as discovery made them (pipeline, name, deps and outs with
    their loaders, params, the function by file, first line and qualname) and of every
    runtime value their code fingerprints could read: the module globals of each project
    module reached from them, each project function's defaults, keyword defaults and
    closure cells, each project class's attributes, in the fingerprinter's canonical form
    (a value with no stable form stands as its type's name). Raises `Unbounded` for a value
    too large to write."""
    from pivot.define.pipeline import Pipeline
    from pivot.fingerprint.resolve import Fingerprinter

    project = Fingerprinter(root)
    met: list[Any] = []
    ids: set[int] = set()

    def seen(obj: Any) -> None:
        if id(obj) not in ids:
            ids.add(id(obj))
            met.append(obj)

    canon = Canon(strict=False, name=_identity, seen=seen)
    texts: list[str] = []

    def text(value: Any) -> None:
        canon.nodes = 0
        texts.append(canon.text(value))
        if canon.nodes > 200_000:
            raise Unbounded

    for stage in stages:
        seen(stage.func)
        texts.append(_identity(stage.func))
        if not isinstance(stage.func, types.FunctionType):
            text(stage.func)  # a bound method's object, a partial's arguments
        texts.append(
            repr(
                (
                    stage.id,
                    str(stage.source),
                    str(stage.workdir),
                    stage.single_out,
                    stage.outs_as_args,
                    [_artifact(a, text) for a in stage.deps],
                    [_artifact(a, text) for a in stage.outs],
                )
            )
        )
        if stage.params is None and not stage.resources:
            texts.append("-")
        else:
            text([stage.params, stage.resources])
    dicts: set[int] = set()
    while met:
        obj = met.pop()
        if isinstance(obj, types.MethodType):
            seen(obj.__func__)
            continue
        if isinstance(obj, types.FunctionType):
            if project.rel(obj.__code__.co_filename) is None:
                continue
            if obj.__closure__ or obj.__defaults__ or obj.__kwdefaults__:
                cells = []
                for cell in obj.__closure__ or ():
                    try:
                        cells.append(cell.cell_contents)
                    except ValueError:  # an empty cell
                        cells.append(None)
                text([_identity(obj), obj.__defaults__, obj.__kwdefaults__, cells])
            module_dict = obj.__globals__
        elif isinstance(obj, types.ModuleType):
            if not project.is_project_module(obj):
                continue
            module_dict = vars(obj)
        elif isinstance(obj, type):
            module = sys.modules.get(obj.__module__)
            if module is not None and not project.is_project_module(module):
                continue
            if module is None and not obj.__flags__ & (1 << 9):
                continue
            attrs = {k: _methods(v) for k, v in vars(obj).items() if k not in _NOT_CLASS_STATE}
            text([_identity(obj), _plain_dict(attrs)])
            continue
        else:
            continue
        if id(module_dict) not in dicts:
            dicts.add(id(module_dict))
            # A pipeline's own state is its stages, digested above.
            text(
                {
                    str(k): "pipeline" if isinstance(v, Pipeline) else v
                    for k, v in module_dict.items()
                    if k not in _IMPORT_STATE
                }
            )
    return text_hash("".join(f"{len(t)}:{t}" for t in texts))  # length-prefixed: unambiguous


def _artifact(artifact: Any, text: Any) -> tuple[Any, ...]:
    """A dep or output as a tuple of plain values (its loader and mark by canonical text,
    memoised for the common loaders: `canonical.loader_text`)."""
    key, declared, path, loader, group, mark = artifact
    fields: list[Any] = [key, declared, path, group, _loader(loader, text)]
    if mark is not None:
        fields.append(dotted_name(type(mark)))
        for name in _field_names(type(mark)):
            value = getattr(mark, name, None)
            if value is loader:
                fields.append("loader")
            elif type(value) in _PLAIN or (
                type(value) is tuple and all(type(v) is str for v in value)
            ):
                fields.append(value)
            else:
                fields.append(_loader(value, text))
    return tuple(fields)


_PLAIN = frozenset((str, int, bool, type(None)))
_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELDS.get(kind)
    if names is None:
        import dataclasses

        fields = dataclasses.fields(kind) if dataclasses.is_dataclass(kind) else ()
        names = _FIELDS[kind] = tuple(f.name for f in fields) or ("__dict__",)
    return names


def _loader(value: Any, text: Any) -> str:
    """The canonical text of a loader (or any other value of a mark)."""
    try:
        return loader_text(value)
    except TypeError:  # no strict form: the lenient one, with its untracked parts
        text(value)
        return "lenient"


# Class attributes that are no state of the class's own: the attribute and weakref
# descriptors, and what pydantic derives from the fields, annotations, config and
# validators (digested as they are): its core schema names the class by its id().
_NOT_CLASS_STATE = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__pydantic_core_schema__",
        "__pydantic_validator__",
        "__pydantic_serializer__",
    }
)


def _methods(value: Any) -> Any:
    """A class attribute, with a static or class method or a property as the functions it
    holds (whose defaults are then digested as functions met)."""
    if isinstance(value, (staticmethod, classmethod)):
        return ("method", value.__func__)
    if isinstance(value, property):
        return ("property", value.fget, value.fset, value.fdel)
    return value


def _plain_dict(values: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in values.items()}


def _identity(obj: Any) -> str:
    """A function by its file, first line and qualname; anything else by its dotted name."""
    code = getattr(obj, "__code__", None)
    if isinstance(code, types.CodeType):
        return f"{code.co_filename}:{code.co_firstlineno}:{dotted_name(obj)}"
    return dotted_name(obj)


def folder_key(tmp_dir: pathlib.Path) -> list[int]:
    """The tmp folder's device and inode: a memo copied from another project is ignored."""
    key = stat_key(str(tmp_dir))
    return [key[4], key[3]]


class Replay(NamedTuple):
    """A memo's replay entry: the key of its command line before the pipelines load
    (`argv_key` without a definition) and after (with the definition digest), the scope
    that command asked for (its targets, `--all`) and how it prints (one of `VIEWS`)."""

    before: str
    after: str
    targets: tuple[str, ...]
    all_pipelines: bool
    view: str


class Memo(NamedTuple):
    """A decoded memo."""

    key: str
    paths: list[str]
    lstat: bytes
    keys: array.array
    dirs: list[tuple[str, str]]
    modules: frozenset[str]
    replay: Replay | None


def load(tmp_dir: pathlib.Path) -> Memo | None:
    """The project's memo, or None when it is absent, not a regular file of its own (a
    link, a fifo: never waited on) or not exactly of this format and project."""
    data = read_own_file(os.path.join(tmp_dir, NAME), _MAX_BYTES)
    if data is None:
        return None
    return decode(data, folder_key(tmp_dir))


def file_key(tmp_dir: pathlib.Path) -> tuple[int, int, int, int, int]:
    """The memo file's own stat key: a memo is replaced by a new file, never rewritten in
    place, so a memo read when its file had this key is the one there while it still has
    it."""
    return stat_key(os.path.join(tmp_dir, NAME), follow=False)


def present(tmp_dir: pathlib.Path) -> bool:
    """Whether a memo file is there to check (a run without one digests nothing first)."""
    return os.path.lexists(os.path.join(tmp_dir, NAME))


def decode(data: bytes, folder: list[int]) -> Memo | None:
    """The strict decoder: exact shape, bounded sizes; anything else is None."""
    if len(data) > _MAX_BYTES:
        return None
    import msgpack

    try:
        row = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception:
        return None
    if type(row) is not list or len(row) != 7:
        return None
    form, where, key, paths, lstat, flat, rest = row
    if form != FORMAT or type(where) is not list or where != folder:
        return None
    if not is_key(key):
        return None
    if type(paths) is not list or type(lstat) is not bytes or type(flat) is not list:
        return None
    if not len(paths) == len(lstat) <= _MAX_ENTRIES or len(flat) != 5 * len(paths):
        return None
    if any(type(p) is not str or not p.startswith("/") or "\0" in p for p in paths):
        return None
    if lstat.strip(b"\0\1"):
        return None
    if any(type(n) is not int for n in flat):
        return None
    try:
        keys = array.array("q", flat)
    except OverflowError:
        return None
    if type(rest) is not list or len(rest) != 3:
        return None
    dirs, modules, replay_row = rest
    if type(dirs) is not list or type(modules) is not list or len(dirs) > _MAX_ENTRIES:
        return None
    pairs = []
    for pair in dirs:
        if type(pair) is not list or len(pair) != 2:
            return None
        rel, digest = pair
        if type(rel) is not str or type(digest) is not str:
            return None
        if len(digest) != 64 or not _HEX64.issuperset(digest):
            return None
        from pivot.errors import PivotError
        from pivot.project import safe_relpath

        try:
            safe_relpath(rel, "a folder in the verdict memo")
        except PivotError:
            return None
        pairs.append((rel, digest))
    if len(modules) > _MAX_ENTRIES or any(type(m) is not str for m in modules):
        return None
    if replay_row == []:
        return Memo(key, paths, lstat, keys, pairs, frozenset(modules), None)
    replay = _decode_replay(replay_row)
    if replay is None:
        return None
    return Memo(key, paths, lstat, keys, pairs, frozenset(modules), replay)


def _decode_replay(row: Any) -> Replay | None:
    """A replay entry of exactly its shape, or None."""
    if type(row) is not list or len(row) != 5:
        return None
    before, after, targets, all_pipelines, view = row
    if not is_key(before) or not is_key(after) or type(all_pipelines) is not bool:
        return None
    if type(targets) is not list or len(targets) > _MAX_ENTRIES:
        return None
    if any(type(t) is not str or "\0" in t for t in targets):
        return None
    if type(view) is not str or view not in VIEWS:
        return None
    return Replay(before, after, tuple(targets), all_pipelines, view)


def module_files() -> set[str]:
    """The files of the modules loaded now."""
    files = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            files.add(file)
    return files


def hit(memo: Memo | None, key: str, hash_folder: Any) -> bool:
    """Whether `memo` is the verdict of this command now: its key is `key` (the parsed
    command's, or its replay entry's `after`), every module loaded is one it recorded,
    every stat key is the same, and every folder hashes (`hash_folder(rel)`: the hash or
    None) to what it recorded."""
    if memo is None:
        return False
    if key != memo.key and (memo.replay is None or key != memo.replay.after):
        return False
    if not memo.modules.issuperset(module_files()):
        return False
    if not _stats_hold(memo):
        return False
    return all(hash_folder(rel) == digest for rel, digest in memo.dirs)


def _stats_hold(memo: Memo) -> bool:
    """Whether every file and folder `memo` recorded has the same stat key now."""
    keys, lstat = memo.keys, memo.lstat
    for i, path in enumerate(memo.paths):
        try:
            st = os.lstat(path) if lstat[i] else os.stat(path)
        except (OSError, ValueError):
            if keys[5 * i : 5 * i + 5].tolist() != list(_ABSENT):
                return False
            continue
        j = 5 * i
        if (
            st.st_size != keys[j]
            or st.st_mtime_ns != keys[j + 1]
            or st.st_ctime_ns != keys[j + 2]
            or st.st_ino != keys[j + 3]
            or st.st_dev != keys[j + 4]
        ):
            return False
    return True


class Marker:
    """The command's racy marker for the memo, made before the run's first `stat` of
    what the memo records (`pivot._racy`), with the wall clock as a fallback."""

    __slots__ = ("made", "wall")

    def __init__(self, tmp_dir: pathlib.Path) -> None:
        self.wall = time.time_ns()
        self.made = _racy.Marker(str(tmp_dir)).made()

    def settled(self, st: os.stat_result) -> bool:
        before = _racy.before(self.made, st)
        if before is not None:
            return before
        return max(st.st_mtime_ns, st.st_ctime_ns) < self.wall - _WALL_RULE_NS


class Recorder:
    """The stat keys a memo is to hold, each judged settled as it is taken."""

    __slots__ = ("dirs", "keys", "lstat", "marker", "paths", "settled", "stats")

    def __init__(self, marker: Marker) -> None:
        self.marker = marker
        self.stats: dict[str, os.stat_result | None] = {}
        self.paths: list[str] = []
        self.keys: list[int] = []
        self.lstat = bytearray()
        self.dirs: dict[str, str] = {}
        self.settled = True

    def add(self, path: str, follow: bool = True) -> os.stat_result | None:
        """Record `path`'s stat key; its stat (None: absent)."""
        if path in self.stats:
            return self.stats[path]
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except (OSError, ValueError):
            st = None
        self.stats[path] = st
        self.paths.append(path)
        self.lstat.append(not follow)
        if st is None:
            self.keys += _ABSENT
            return None
        self.keys += (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        if self.settled and not self.marker.settled(st):
            self.settled = False
        return st

    def add_tree(self, top: str) -> None:
        """Record `top`, and every folder and file below it (links not followed)."""
        self.add(top, follow=False)
        for folder, subdirs, files in os.walk(top):
            for name in subdirs + files:
                self.add(os.path.join(folder, name), follow=False)

    def add_workspace_path(self, root: str, rel: str, folder_hash: str | None) -> bool:
        """Record a dep or output: a file by its stat key, a folder by the hash its lock
        records (`folder_hash`). False when it is absent, or a folder of no known hash."""
        st = self.add(os.path.join(root, rel))
        if st is None:
            return False
        if stat_mod.S_ISDIR(st.st_mode):
            if folder_hash is None:
                return False
            self.dirs[rel] = folder_hash
        return True

    def encode(
        self, key: str, folder: list[int], modules: set[str], replay: Replay | None
    ) -> bytes:
        import msgpack

        replay_row = [] if replay is None else [*replay[:2], list(replay.targets), *replay[3:]]
        return msgpack.packb(
            [
                FORMAT,
                folder,
                key,
                list(self.paths),
                bytes(self.lstat),
                self.keys,
                [
                    [[rel, h] for rel, h in sorted(self.dirs.items())],
                    sorted(modules),
                    replay_row,
                ],
            ]
        )


def invalidate(tmp_dir: pathlib.Path) -> None:
    """Remove the memo (before a run changes anything). One that cannot be removed (a
    folder in its place, a read-only tmp folder) is left: what the run changes is in its
    stat keys."""
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(tmp_dir, NAME))


def write(tmp_dir: pathlib.Path, data: bytes) -> None:
    """Write the memo atomically (not synced: a memo lost to a crash is only a miss)."""
    with contextlib.suppress(OSError, DiskFull):
        write_bytes(pathlib.Path(tmp_dir, NAME), data, sync=False)
