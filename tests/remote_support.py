"""Helpers for remote tests: projects whose lock files name cached outputs, and clones."""

from __future__ import annotations

import pathlib
import shutil

from support import declare_stage

from pivot.cache.hashing import hash_bytes
from pivot.cache.objects import LocalCache
from pivot.cache.runs import RunRecords
from pivot.project import Project, init_project
from pivot.run.lockfile import Lock, write_lock


def make_project(root: pathlib.Path, files: dict[str, bytes], stage: str = "p/s") -> Project:
    """A project whose stage `stage` (declared in its `pipeline.py`) produced `files` (a
    key ending in '/' is a directory)."""
    init_project(root)
    project = Project(root)
    cache = LocalCache(project.cache_dir, project.tmp_dir)
    outs = {}
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for top in sorted({rel.split("/")[0] for rel in files}):
        stored, _ = cache.add_output(root / top, root)
        outs[top] = {"hash": stored.hash, "size": stored.size, "kind": stored.kind}
    run_key = hash_bytes(f"{stage}:{sorted(files)}".encode())
    declare_stage(root, stage, sorted(outs))
    write_lock(project.stages_dir, Lock(stage, run_key, {}, {}, {}, outs))
    RunRecords(project.cache_dir).put(run_key, outs)
    return project


def clone(src: Project, root: pathlib.Path) -> Project:
    """A fresh checkout of `src`: its pipeline file and lock files, nothing else."""
    init_project(root)
    shutil.copy(src.root / "pipeline.py", root / "pipeline.py")
    for lock in src.stages_dir.rglob("*.lock"):
        dest = root / ".pivot" / "stages" / lock.relative_to(src.stages_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(lock.read_bytes())
    return Project(root)


def files_of(root: pathlib.Path) -> dict[str, bytes]:
    """The outputs in the workspace (every file but Pivot's, its `.gitignore` files and
    the pipeline's)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not {".pivot", "__pycache__"} & set(p.parts)
        and p.relative_to(root).as_posix() != "pipeline.py"
        and p.name != ".gitignore"  # Pivot's managed lines, not an output
    }


def runs_on_remote(project: Project, remote, run_keys: list[str]) -> set[str]:
    """Which of `run_keys` the remote's indexes (refreshed now) hold run records for."""
    from pivot.remote.transfer import remote_contents

    contents = remote_contents(project, remote)
    return {key for key in run_keys if key in contents.runs}


def push_all(project: Project, remote, **kw):
    """Push every output the project's lock files name, with every local run record."""
    from pivot.remote.transfer import push_locks
    from pivot.run.lockfile import load_locks

    return push_locks(
        project, remote, load_locks(project), RunRecords(project.cache_dir).keys(), **kw
    )
