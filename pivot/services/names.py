"""Names a shell completes: stage ids, pipeline names and remote names, found cheaply
(lock files, the scan's cached index, the config), without loading pipeline code."""

from __future__ import annotations

from pivot.errors import PivotError
from pivot.project import Project


def stage_names() -> list[str]:
    """Stage ids (`<pipeline>/<stage>`) and pipeline names (`<pipeline>/`) of the project
    of the current directory: from its lock files and the scan's cached index."""
    from pivot.cache.state import StateDB
    from pivot.discover.finder import Discovery
    from pivot.run.lockfile import all_locks

    try:
        project = Project.discover()
    except PivotError:
        return []
    ids = set(all_locks(project.stages_dir))
    state = StateDB(project.state_path, must_save=lambda: False)
    try:
        ids.update(Discovery(project, state).indexed_stages() or ())
    except Exception:
        pass
    finally:
        state.close()
    pipelines = {sid.partition("/")[0] + "/" for sid in ids}
    return sorted(ids | pipelines)


def remote_names() -> list[str]:
    """The configured remotes' names (none outside a project or with a broken config)."""
    from pivot import config

    try:
        return sorted(config.remotes(Project.discover()))
    except PivotError:
        return []
