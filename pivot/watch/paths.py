"""What `run --watch` watches: the paths of a scope, the folders to watch for them, and
what a changed path means (code to reload, an input, an output, or nothing)."""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pivot.discover.finder import ancestors
from pivot.discover.loading import PIPELINE_FILES

if TYPE_CHECKING:
    from pivot.discover.graph import Graph
    from pivot.discover.loading import LoadedPipeline

CODE, INPUT, OUTPUT, FOLDER = "code", "input", "output", "folder"
IGNORED_DIRS = {".git", ".pivot", "__pycache__"}


@dataclass
class WatchSet:
    """The project paths of a scope (project-relative POSIX paths, "" is the root)."""

    root: pathlib.Path
    code: set[str] = field(default_factory=set)  # pipeline files and project modules
    inputs: set[str] = field(default_factory=set)  # deps no stage of the scope writes
    outputs: dict[str, str] = field(default_factory=dict)  # output path -> stage id
    pipeline_dirs: set[str] = field(default_factory=set)  # where a new pipeline file counts
    pipelines: int = 0
    _folders: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._folders = {a for p in self.paths() for a in ancestors(p)}

    def paths(self) -> set[str]:
        return self.code | self.inputs | set(self.outputs)

    def classify(self, rel: str) -> str | None:
        """What a change of `rel` means for the scope; None when it means nothing."""
        parts = rel.split("/")
        if IGNORED_DIRS.intersection(parts):
            return None
        if rel in self.code:
            return CODE
        parent, _, name = rel.rpartition("/")
        if name in PIPELINE_FILES and parent in self.pipeline_dirs:
            return CODE  # a new pipeline file may produce a dep, or join the scope
        if _within(rel, self.outputs):
            return OUTPUT
        if _within(rel, self.inputs):
            return INPUT
        if rel in self._folders:
            return FOLDER  # a folder on the way to a watched path came or went
        return None

    def below(self, folder: str) -> set[str]:
        """The watched paths inside `folder` ("" is the root)."""
        prefix = folder + "/" if folder else ""
        return {p for p in self.paths() if p.startswith(prefix)}

    def output_of(self, rel: str) -> str | None:
        """The output path `rel` is, or lies in."""
        return next((p for p in (rel, *ancestors(rel)) if p in self.outputs), None)

    def roots(self) -> tuple[set[str], set[str]]:
        """The folders to watch, as absolute paths: (each for its own entries, each with
        everything below it). A path that does not exist is watched through its nearest
        existing folder, so that its creation is seen."""
        flat: set[str] = set()
        trees: set[str] = set()
        for rel in self.paths():
            path = self.root / rel
            if rel not in self.code and path.is_dir() and not path.is_symlink():
                trees.add(str(path))
            flat.add(self._existing_folder(str(pathlib.PurePosixPath(rel).parent)))
        for rel in self.pipeline_dirs:
            flat.add(self._existing_folder(rel))
        return flat, trees

    def _existing_folder(self, rel: str) -> str:
        rel = "" if rel == "." else rel
        for candidate in (rel, *ancestors(rel), ""):
            path = self.root / candidate
            if path.is_dir():
                return str(path)
        return str(self.root)


def _within(rel: str, paths) -> bool:
    return rel in paths or any(a in paths for a in ancestors(rel))


def watch_set(
    root: pathlib.Path,
    graph: Graph,
    pipelines: list[LoadedPipeline],
    modules: set[str],
) -> WatchSet:
    """The watch set of a loaded scope: its stages' deps and outputs, the files of
    `pipelines`, and the project `modules` (absolute files) their code reads."""
    outputs = {o.path: s.id for s in graph.stages.values() for o in s.outs}
    inputs = {
        d.path
        for s in graph.stages.values()
        for d in s.deps
        if d.path not in outputs and not _within(d.path, outputs)
    }
    code = {_rel(root, str(p.file)) for p in pipelines}
    code |= {_rel(root, m) for p in pipelines for m in p.modules}
    code |= {_rel(root, m) for m in modules}
    code.discard("")
    dirs = {_rel(root, str(p.directory)) for p in pipelines}
    # A dep nothing in scope writes: a pipeline file added beside it or above may.
    dirs |= {a for path in inputs for a in (*ancestors(path), "")}
    return WatchSet(
        root,
        code={c for c in code if not c.startswith("../")},
        inputs=inputs,
        outputs=outputs,
        pipeline_dirs=dirs,
        pipelines=len(pipelines),
    )


def _rel(root: pathlib.Path, path: str) -> str:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return "" if rel == "." else rel
