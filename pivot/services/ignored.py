"""Which paths Pivot keeps out of git after a command: the outputs and tracked data it
placed are listed in the `.gitignore` next to each, and Pivot's line for a path that nothing
owns any more is dropped (the rule is in docs/data.md, *What git sees*).

A path is owned by a stage of a pipeline the command loaded that declares it, by a
tracked-data record, or, while the command did not load every pipeline, by the lock file
or the scan's cached index of a pipeline it did not load (that pipeline may still produce
it). The `.gitignore` files looked at are those of the folders of every owned path, of
the outputs the loaded pipelines' lock files named before the command, and of the paths
the command placed or dropped.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pivot import gitignore
from pivot._fs import read_own_file
from pivot.cache import tracked
from pivot.errors import PivotError
from pivot.project import safe_relpath
from pivot.run.lockfile import read_lock

_LENIENT_MAX = 64 << 20  # a lock file read for its output paths alone

if TYPE_CHECKING:
    from pivot.discover.finder import Discovery
    from pivot.project import Project
    from pivot.run.lockfile import Lock


class GitIgnored:
    """Pivot's `.gitignore` lines for one command: made before the command changes lock
    files (it notes the outputs they name), `update`d after."""

    def __init__(self, project: Project, discovery: Discovery | None, complete: bool) -> None:
        """`discovery` holds the pipelines the command loaded (None: none); `complete`
        when that is every pipeline of the project."""
        self.project = project
        self.discovery = discovery
        self.complete = complete
        # The lock files read for `before`, by stage id: the plan that follows takes them.
        self.locks: dict[str, Lock] = {}
        self.before = _lock_outs(project, self._names(), self.locks)
        # Whether `update` asked about the pipelines not loaded (the verdict memo does not
        # record what they own).
        self.consulted_elsewhere = False

    def _names(self) -> set[str]:
        if self.discovery is None:
            return set()
        return {loaded.name for loaded in self.discovery.pipelines.values()}

    def update(self, placed: Iterable[str], dropped: Iterable[str] = ()) -> None:
        """List `placed` in git's ignore files; drop Pivot's lines for the paths no one
        owns (among them `dropped`, paths the command stopped tracking)."""
        placed, dropped = list(placed), list(dropped)
        gitignore.add(self.project, placed)
        declared = [
            out.path
            for loaded in (self.discovery.pipelines.values() if self.discovery else ())
            for stage in loaded.stages.values()
            for out in stage.outs
        ]
        owned = declared + list(tracked.load_all(self.project))
        folders = {posixpath.dirname(p) for p in [*owned, *self.before, *placed, *dropped]}
        gitignore.prune(self.project, folders, owned + placed, self._elsewhere)

    def _elsewhere(self) -> list[str]:
        """Paths the pipelines this command did not load may own."""
        if self.complete:
            return []
        self.consulted_elsewhere = True
        names = self._names()
        try:
            others = {e.name for e in os.scandir(self.project.stages_dir) if e.is_dir()} - names
        except FileNotFoundError:
            others = set()
        owned = _lock_outs(self.project, others)
        indexed = self.discovery.indexed_stages() if self.discovery is not None else None
        for stage_id, outs in (indexed or {}).items():
            if stage_id.partition("/")[0] not in names:
                owned += outs
        return owned


def _lock_outs(
    project: Project, pipelines: Iterable[str], keep: dict[str, Lock] | None = None
) -> list[str]:
    """The output paths the lock files of `pipelines` name; the locks that parse are put
    in `keep`, by stage id. Of a lock file that does not parse only the paths are read
    (each checked as any path from a lock file), or it is skipped: the commands that use
    it report it."""
    outs = []
    for name in sorted(pipelines):
        for folder, _, files in os.walk(project.stages_dir / name):
            prefix = os.path.relpath(folder, project.stages_dir).replace(os.sep, "/")
            for file in files:
                if not file.endswith(".lock"):
                    continue
                # Read through `read_lock` first: the plan uses the same lock files next.
                stage_id = f"{prefix}/{file[:-5]}"
                try:
                    lock = read_lock(project.stages_dir, stage_id)
                    if lock is not None:
                        outs += lock.outs
                        if keep is not None:
                            keep[stage_id] = lock
                        continue
                except PivotError:
                    pass  # a lenient read of the paths alone, below
                data = read_own_file(os.path.join(folder, file), _LENIENT_MAX)
                if data is None:  # a fifo or link in its place is not read
                    continue
                try:
                    recorded = json.loads(data)["outs"]
                    if not isinstance(recorded, dict):
                        continue
                    paths = [safe_relpath(p, "an output path in a lock file") for p in recorded]
                except (OSError, ValueError, KeyError, TypeError, PivotError):
                    continue
                outs += paths
    return outs
