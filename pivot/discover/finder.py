"""Finding pipelines in a project and the stages that produce a given artifact."""

from __future__ import annotations

import fnmatch
import logging
import os
import pathlib
from typing import TYPE_CHECKING

import msgpack

from pivot.discover.loading import (
    PIPELINE_FILES,
    LoadedPipeline,
    check_not_pipeline,
    load_file,
    pipeline_file_in,
)
from pivot.errors import DefinitionError, PivotError
from pivot.project import Project, safe_relpaths

if TYPE_CHECKING:
    from pivot.cache.state import StateDB
    from pivot.define.stage import StageSpec

SKIP_DIRS = {"node_modules", "__pycache__", "site-packages", "venv", "env"}
INDEX_NAMESPACE = "discovery"
INDEX_KEY = "pipelines"
log = logging.getLogger(__name__)  # the CLI shows warnings; see pivot.cli.main


def _skip_dir(dirpath: str, name: str) -> bool:
    return (
        name.startswith(".")
        or name in SKIP_DIRS
        or os.path.exists(os.path.join(dirpath, name, "pyvenv.cfg"))
    )


def ancestors(path: str) -> list[str]:
    """Project-relative ancestors of a project-relative path, nearest first."""
    found = []
    cut = path.rfind("/")
    while cut >= 0:
        found.append(path[:cut])
        cut = path.rfind("/", 0, cut)
    return found


class Discovery:
    """The pipelines loaded so far, and the rules to find more of them."""

    def __init__(self, project: Project, state: StateDB) -> None:
        self.project = project
        self.state = state
        self.pipelines: dict[pathlib.Path, LoadedPipeline] = {}
        self.names: dict[str, pathlib.Path] = {}
        self.producers: dict[str, StageSpec] = {}
        # Every folder above a loaded output -> one output inside it (overlap checks).
        self._under: dict[str, str] = {}
        # A loaded pipeline file -> its project path and the folders above it.
        self._file_paths: dict[pathlib.Path, tuple[str, ...]] = {}
        self._scan: dict[str, list[str] | str] | None = None
        self._scan_is_fresh = False
        self.broken: dict[str, str] = {}
        self._load_errors: dict[str, PivotError] = {}
        self._stage_outs: dict[str, list[str]] | None = None
        self._warned: set[str] = set()

    # -- loading ---------------------------------------------------------------------------

    def load(self, file: pathlib.Path) -> LoadedPipeline:
        if file in self.pipelines:
            return self.pipelines[file]
        rel = self.project.rel(file)
        if rel in self.broken:
            raise self._error(rel)
        return self._add(load_file(self.project, file))

    def _load_or_skip(self, file: pathlib.Path) -> LoadedPipeline | None:
        """`load`, but a pipeline file that fails to import is noted in `broken` (with one
        warning) instead of failing a command that may not need it."""
        if file in self.pipelines:
            return self.pipelines[file]
        rel = self.project.rel(file)
        if rel in self.broken:
            return None
        try:
            loaded = load_file(self.project, file)
        except PivotError as exc:
            self._load_errors[rel] = exc
            self._skip(rel, str(exc))
            return None
        return self._add(loaded)

    def _skip(self, rel: str, error: str) -> None:
        self.broken.setdefault(rel, error)

    def _warn_skipped(self) -> None:
        """One warning per pipeline skipped so far, naming it and its error."""
        for rel in sorted(set(self.broken) - self._warned):
            self._warned.add(rel)
            log.warning(f"Skipping the pipeline {rel}, which does not load: {self.broken[rel]}")

    def check_loaded_all(self) -> None:
        """Fail on a pipeline that was skipped: `--all`, and lookups that may need it."""
        if self.broken:
            first = min(self.broken)
            more = sorted(self.broken)[1:]
            also = f" Other pipelines that do not load: {', '.join(more)}." if more else ""
            error = self._error(first)
            raise error.reworded(str(error) + also) if also else error

    def _error(self, rel: str) -> PivotError:
        """The error the pipeline file `rel` failed to load with (this time, or as the
        scan's index recorded it)."""
        found = self._load_errors.get(rel)
        if found is not None:
            return found
        return DefinitionError(self.broken[rel], path=self.project.root / rel)

    def _add(self, loaded: LoadedPipeline) -> LoadedPipeline:
        file = loaded.file
        other = self.names.get(loaded.name)
        if other is not None:
            raise DefinitionError(
                f"Two pipelines are named {loaded.name!r}: {other} and {file}. Pipeline names "
                f"must be unique in a project; rename one of them."
            )
        for stage in loaded.stages.values():
            for out in stage.outs:
                self._add_producer(out.path, stage)
        self._check_pipelines_kept(loaded)
        self.pipelines[file] = loaded
        self.names[loaded.name] = file
        return loaded

    def _add_producer(self, path: str, stage: StageSpec) -> None:
        clash = self.producers.get(path)
        above = ancestors(path)
        if clash is None:
            clash = next((self.producers[a] for a in above if a in self.producers), None)
        if clash is None:
            inside = self._under.get(path)
            clash = self.producers[inside] if inside is not None else None
        if clash is not None:
            raise DefinitionError(
                f"Two stages write overlapping outputs: {stage.id} ({stage.source}) writes "
                f"{path} and {clash.id} ({clash.source}) writes {_out_near(clash, path)}. "
                f"Each output path must belong to exactly one stage."
            )
        self.producers[path] = stage
        for folder in above:
            self._under.setdefault(folder, path)

    def _check_pipelines_kept(self, loaded: LoadedPipeline) -> None:
        """Refuse an output of a loaded stage that is a loaded pipeline's file or folder."""
        for file in (loaded.file, *self.pipelines):
            paths = self._file_paths.get(file)
            if paths is None:  # each file's once, not once per pipeline loaded after it
                rel = self.project.rel(file)
                paths = self._file_paths[file] = (rel, *ancestors(rel))
            for path in paths:
                stage = self.producers.get(path)
                if stage is not None:
                    out = next(o for o in stage.outs if o.path == path)
                    where = f"stage {stage.id} ({stage.source}): its output {out.declared!r}"
                    check_not_pipeline(path, paths[0], where)

    def nearest_pipeline(self, start: pathlib.Path) -> pathlib.Path | None:
        """The pipeline file at or above `start`, up to the project root."""
        start = start.resolve()
        for directory in (start, *start.parents):
            found = pipeline_file_in(directory)
            if found is not None:
                return found
            if directory == self.project.root:
                break
        return None

    # -- finding producers -----------------------------------------------------------------

    def loaded_producer(self, path: str) -> StageSpec | None:
        stage = self.producers.get(path)
        if stage is None:
            stage = next((self.producers[a] for a in ancestors(path) if a in self.producers), None)
        return stage

    def outputs_inside(self, path: str) -> list[tuple[str, StageSpec]]:
        """Loaded outputs that lie inside the directory `path`."""
        prefix = path + "/"
        return [(p, s) for p, s in sorted(self.producers.items()) if p.startswith(prefix)]

    def find_producer(self, path: str) -> StageSpec | None:
        """The stage that writes `path`: loaded ones, then the walk up, then the scan."""
        stage = self.loaded_producer(path)
        if stage is not None:
            return stage
        for directory in [*ancestors(path), ""]:
            file = pipeline_file_in(self.project.root / directory)
            if file is not None and file not in self.pipelines:
                self.load(file)
                stage = self.loaded_producer(path)
                if stage is not None:
                    return stage
        for rel in self._files_producing(path):
            self._load_or_skip(self.project.root / rel)
        return self.loaded_producer(path)

    def outputs_matching(self, pattern: str) -> list[str]:
        """Project outputs (of loaded stages and of every pipeline the scan knows) that the
        glob `pattern` matches, sorted; with none, the scan is redone once."""
        for attempt in range(2):
            index = self.scan() if attempt == 0 else self._fresh_scan()
            outs = {o for v in index.values() if not isinstance(v, str) for o in v}
            found = sorted(p for p in outs | set(self.producers) if glob_match(pattern, p))
            if found or self._scan_is_fresh:
                break
        for path in found:
            self.find_producer(path)
        return found

    def _fresh_scan(self) -> dict[str, list[str] | str]:
        self._scan = self._rescan()
        return self._scan

    def find_producer_rescanning(self, path: str) -> StageSpec | None:
        """`find_producer`, then once more over a fresh scan if the cached index was used
        (pipelines may generate stages from files the index cannot watch)."""
        stage = self.find_producer(path)
        if stage is None and not self._scan_is_fresh:
            self._scan = self._rescan()
            stage = self.find_producer(path)
        return stage

    def load_all(self, strict: bool = True) -> list[LoadedPipeline]:
        """Every pipeline under the root; one that does not load fails the command, or
        without `strict` is skipped with a warning."""
        for rel in sorted(self.scan()):
            self._load_or_skip(self.project.root / rel)
        if strict:
            self.check_loaded_all()
        self._warn_skipped()
        return list(self.pipelines.values())

    # -- the scan of every pipeline file, with its cached index ----------------------------

    def scan(self) -> dict[str, list[str] | str]:
        """Every pipeline file under the root -> the outputs it declared when last loaded,
        or the error it failed to load with."""
        if self._scan is None:
            self._scan = self._validated_index()
            if self._scan is None:
                self._scan = self._rescan()
        return self._scan

    def _files_producing(self, path: str) -> list[str]:
        candidates = {path, *ancestors(path)}
        index = self.scan()
        for rel, outs in sorted(index.items()):
            if isinstance(outs, str):
                self._skip(rel, outs)
        self._warn_skipped()
        return [
            rel
            for rel, outs in sorted(index.items())
            if self.project.root / rel not in self.pipelines
            and not isinstance(outs, str)
            and candidates.intersection(outs)
        ]

    def _validated_index(self) -> dict[str, list[str] | str] | None:
        """The cached scan, if it decodes to the exact shape `_rescan` stores and every
        folder and pipeline file in it is unchanged; None (a rescan) otherwise."""
        cached = decode_index(self.state.get(INDEX_NAMESPACE, INDEX_KEY))
        if cached is None:
            return None
        dirs, files, stage_outs = cached
        root = self.project.root
        try:
            for rel, mtime in dirs.items():
                if os.stat(root / rel).st_mtime_ns != mtime:
                    return None
            for rel, (mtime, size, _) in files.items():
                st = os.stat(root / rel)
                if (st.st_mtime_ns, st.st_size) != (mtime, size):
                    return None
        except OSError:  # gone, or a folder of it is a file now
            return None
        self._stage_outs = stage_outs
        return {rel: entry[2] for rel, entry in files.items()}

    def _rescan(self) -> dict[str, list[str] | str]:
        self._scan_is_fresh = True
        root = self.project.root
        dirs: dict[str, int] = {}
        files: dict[str, list] = {}
        stage_outs: dict[str, list[str]] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not _skip_dir(dirpath, d))
            rel_dir = os.path.relpath(dirpath, root)
            dirs[rel_dir] = os.stat(dirpath).st_mtime_ns
            present = [n for n in PIPELINE_FILES if n in filenames]
            if len(present) > 1:
                pipeline_file_in(pathlib.Path(dirpath))
            for name in present:
                full = pathlib.Path(dirpath, name)
                st = full.stat()
                loaded = self._load_or_skip(full)
                rel = self.project.rel(full)
                outs: list[str] | str = (
                    self.broken[rel]
                    if loaded is None
                    else [o.path for s in loaded.stages.values() for o in s.outs]
                )
                files[self.project.rel(full)] = [st.st_mtime_ns, st.st_size, outs]
                for stage in loaded.stages.values() if loaded is not None else ():
                    stage_outs[stage.id] = [o.path for o in stage.outs]
        self._stage_outs = stage_outs
        index = {"dirs": dirs, "files": files, "stages": stage_outs}
        try:
            blob = msgpack.packb(index, use_bin_type=True)
        except UnicodeEncodeError:  # a folder name that is not UTF-8: not cached
            blob = None
        if blob is not None:
            self.state.put(INDEX_NAMESPACE, INDEX_KEY, blob)
        return {rel: entry[2] for rel, entry in files.items()}

    def indexed_stages(self) -> dict[str, list[str]] | None:
        """Every stage id under the root -> its outputs, as the scan's index knew them
        (None when there is no valid index: finding out would load every pipeline)."""
        if self._scan is None:
            self._scan = self._validated_index()
        return self._stage_outs


Index = tuple[dict[str, int], dict[str, tuple[int, int, list[str] | str]], dict[str, list[str]]]
MAX_PATH = 4096  # characters of one path in the index (Linux's PATH_MAX is in bytes)
MAX_ERROR = 1 << 16  # characters of a recorded load error


def decode_index(raw: object) -> Index | None:
    """The scan's index `_rescan` stored, as (folders -> mtime, pipeline files -> (mtime,
    size, outputs or load error), stage ids -> outputs), if `raw` is exactly that shape;
    None for anything else (it is read from the state db: untrusted). Folders and files
    are plain relative paths the scan could have found (no hidden or skipped folder, a
    pipeline file's name, each inside a listed folder); outputs pass `safe_relpath`."""
    if not isinstance(raw, bytes):
        return None
    try:
        cached = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException):
        return None  # UnicodeDecodeError and msgpack's own errors are ValueErrors
    if type(cached) is not dict or cached.keys() != {"dirs", "files", "stages"}:
        return None
    dirs, files, stages = cached["dirs"], cached["files"], cached["stages"]
    if not (type(dirs) is dict and type(files) is dict and type(stages) is dict):
        return None
    if "." not in dirs or not all(_mtime(m) for m in dirs.values()):
        return None
    if not all(rel == "." or (_scanned(rel) and _parent(rel) in dirs) for rel in dirs):
        return None
    checked: dict[str, tuple[int, int, list[str] | str]] = {}
    outputs: list[str] = []
    for rel, entry in files.items():
        if not (type(entry) is list and len(entry) == 3 and _scanned(rel)):
            return None
        mtime, size, outs = entry
        name = rel.rsplit("/", 1)[-1]
        if name not in PIPELINE_FILES or _parent(rel) not in dirs:
            return None
        if not (_mtime(mtime) and type(size) is int and 0 <= size < 1 << 63):
            return None
        if type(outs) is list:
            outputs += outs
        elif type(outs) is not str or len(outs) > MAX_ERROR:
            return None
        checked[rel] = (mtime, size, outs)
    for outs in stages.values():
        if type(outs) is not list:
            return None
        outputs += outs
    try:
        outputs = list(set(outputs))  # each once: a stage's are its pipeline file's too
    except TypeError:  # one is a list or a dict
        return None
    if not _names(list(stages)) or max(map(len, outputs), default=0) > MAX_PATH:
        return None
    try:  # in one match of them all (2,000 stages' outputs take 0.3 ms)
        safe_relpaths(outputs, "an output in the pipeline scan's index")
    except (PivotError, TypeError):  # TypeError: one is not text
        return None
    return dirs, checked, stages


def _names(names: list) -> bool:
    """Whether `names` are all text of 1 to MAX_PATH characters without NUL."""
    try:
        joined = "\0".join(names)
    except TypeError:  # one is not text
        return False
    return not names or (
        joined.count("\0") == len(names) - 1
        and min(map(len, names)) > 0
        and max(map(len, names)) <= MAX_PATH
    )


def _mtime(value: object) -> bool:
    return type(value) is int and -(1 << 63) <= value < 1 << 63


def _parent(rel: str) -> str:
    cut = rel.rfind("/")
    return rel[:cut] if cut >= 0 else "."


def _scanned(rel: object) -> bool:
    """Whether `rel` is a path the scan could list: plain, relative, in no hidden or
    skipped folder."""
    if type(rel) is not str or not 0 < len(rel) <= MAX_PATH or "\0" in rel or rel[0] == "/":
        return False
    return all(p and p not in SKIP_DIRS and p[0] != "." for p in rel.split("/"))


def glob_match(pattern: str, path: str) -> bool:
    """Whether the project path matches the glob: `*` and `?` within one folder name,
    `**` for any number of folders."""
    return _match(pattern.split("/"), path.split("/"))


def _match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])


def _out_near(stage: StageSpec, path: str) -> str:
    for out in stage.outs:
        if out.path == path or path.startswith(out.path + "/") or out.path.startswith(path + "/"):
            return out.path
    return path
