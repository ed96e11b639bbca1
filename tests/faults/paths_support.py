"""Crafting what an attacker commits or pushes: lock files, tree manifests, run records,
put into a real project's cache through Pivot's own storage code."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from support import PYTHONPATH, add_blob

from pivot.cache.hashing import TreeEntry, encode_tree, hash_bytes
from pivot.cache.objects import LocalCache
from pivot.project import Project
from pivot.run.lockfile import Lock

HOOK = b"#!/bin/sh\necho pwned\n"


def _cache(root: pathlib.Path) -> LocalCache:
    project = Project(root)
    return LocalCache(project.cache_dir, project.tmp_dir)


def cache_file(root: pathlib.Path, data: bytes) -> dict:
    """Put `data` into the project's cache; the lock entry of a file output holding it."""
    return {"hash": add_blob(_cache(root), data), "size": len(data), "kind": "file"}


def cache_tree(root: pathlib.Path, files: dict[str, tuple[bytes, int]]) -> dict:
    """Put a tree manifest naming `files` ({relpath: (data, mode)}, taken as given) and
    their blobs into the project's cache; the lock entry of a directory output."""
    cache = _cache(root)
    entries = [
        TreeEntry(rel, add_blob(cache, data), len(data), mode)
        for rel, (data, mode) in files.items()
    ]
    manifest = encode_tree(entries)
    add_blob(cache, manifest)
    return {"hash": hash_bytes(manifest), "size": sum(e.size for e in entries), "kind": "dir"}


def write_lock(
    root: pathlib.Path, stage_id: str, outs: dict, deps: dict | None = None, run_key: str = ""
) -> pathlib.Path:
    """Write a lock file as an attacker would commit it (no validation on the way)."""
    lock = Lock(stage_id, run_key or hash_bytes(stage_id.encode()), {}, {}, deps or {}, outs)
    path = root / ".pivot" / "stages" / f"{stage_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lock.to_json())
    return path


def read_lock_json(root: pathlib.Path, stage_id: str) -> dict:
    return json.loads((root / ".pivot" / "stages" / f"{stage_id}.lock").read_text())


def git_init(root: pathlib.Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, capture_output=True)


def snapshot(*folders: pathlib.Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry under `folders` (not following links): its mode and its content."""
    found: dict[str, tuple[int, bytes | str]] = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if os.path.islink(path):
                    found[path] = (st.st_mode, os.readlink(path))
                elif os.path.isfile(path):
                    found[path] = (st.st_mode, pathlib.Path(path).read_bytes())
                else:
                    found[path] = (st.st_mode, "")
    return found


def protected(root: pathlib.Path) -> dict[str, tuple[int, bytes | str]]:
    """What a crafted input must never change: .git/ and Pivot's config files."""
    state = snapshot(root / ".git")
    for name in ("config.yaml", "config.local.yaml"):
        path = root / ".pivot" / name
        state[str(path)] = (0, path.read_bytes() if path.exists() else b"<absent>")
    return state


def publish_raw(folder: pathlib.Path, blobs: list[bytes]) -> None:
    """Put `blobs` on the local-folder remote at `folder` as a pack and an index, written
    by Pivot's own pack and index code but without the checks a `pivot push` makes (as a
    hostile pusher could)."""
    import tempfile

    from pivot.cache.state import StateDB
    from pivot.remote import packs, transfer
    from pivot.remote.index_cache import RemoteIndexCache
    from pivot.remote.stores import Remote, open_remote

    remote = open_remote(str(folder), name="origin")
    builder = packs.PackBuilder()
    for data in blobs:
        builder.add(hash_bytes(data), data)
    data, info = builder.finish()
    remote.put_bytes(Remote.pack_key(info.pack_id), data)
    with tempfile.TemporaryDirectory() as scratch:
        state = StateDB(pathlib.Path(scratch) / "state.db")
        transfer.store_index(remote, RemoteIndexCache(state, remote), [info], [])
        state.close()


def assert_refused(proc, *needles: str) -> None:
    """The command stopped with exit code 1 and one paragraph holding every needle."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


# One stage writing `data/inner/x.txt`, for the tests that swap `data` for a link.
SWAP_PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def s() -> Annotated[str, pivot.Out("data/inner/x.txt", pivot.loaders.Text())]:
    return "fresh"


pipeline.register(s)
"""

# Runs stage p/s in this process the way a worker does (`local.execute_here`), after the
# hook file in argv[2] patched Pivot.
_EXECUTE = """
import json, pathlib, sys
from pivot.cache.state import StateDB
from pivot.discover.finder import Discovery
from pivot.project import Project
from pivot.run import local

root = pathlib.Path(sys.argv[1])
project = Project(root)
stages = {st.id: st for p in Discovery(project, StateDB(project.state_path)).load_all()
          for st in p.stages.values()}
local.register_stages(stages)
exec(open(sys.argv[2]).read())
outcome = local.execute_here("p/s", root, str(project.cache_dir), str(project.tmp_dir))
print(json.dumps({"ok": outcome.ok, "error": outcome.error}))
"""


def execute_with_hook(
    project: pathlib.Path, hook: str, outside: pathlib.Path, tmp_path: pathlib.Path
) -> dict:
    """Stage p/s of `SWAP_PIPELINE` run in a fresh process patched by `hook` (which finds
    the link target in $OUTSIDE): its outcome's `ok` and `error`."""
    hook_file = tmp_path / "hook.py"
    hook_file.write_text(hook)
    done = subprocess.run(
        [sys.executable, "-c", _EXECUTE, str(project), str(hook_file)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "OUTSIDE": str(outside)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])
