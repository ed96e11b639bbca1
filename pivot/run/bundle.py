"""The code bundle a cluster worker runs: the project's Python files and pipeline files
as one tree in the cache, addressed by its hash like any directory output, so that code
that did not change is neither uploaded nor downloaded again."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pivot.cache.hashing import TreeEntry, encode_tree, file_mode
from pivot.project import safe_relpath

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace

PIPELINE_NAMES = {"pivot.yaml"}
SKIPPED_FOLDERS = {"__pycache__", "site-packages", "dist-packages", "node_modules"}


def bundle_files(ws: Workspace, outputs: set[str]) -> list[str]:
    """Project paths of the files a worker needs to import the pipelines: every `*.py` and
    `pivot.yaml` under the root, outside hidden folders, virtual environments and the
    declared `outputs`."""
    root = str(ws.project.root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in SKIPPED_FOLDERS
            and rel_dir + d not in outputs
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        )
        for name in filenames:
            rel = rel_dir + name
            wanted = name.endswith(".py") or name in PIPELINE_NAMES
            if wanted and rel not in outputs and not os.path.islink(os.path.join(dirpath, name)):
                found.append(rel)
    return sorted(found)


def build_bundle(ws: Workspace, outputs: set[str]) -> str:
    """Store the bundle's files and manifest in the local cache; returns its tree hash."""
    entries = []
    root = ws.project.root
    with ws.cache.batch() as batch:
        for rel in bundle_files(ws, outputs):
            safe_relpath(rel, "a source file of the project (sent to the cluster's workers)")
            path = root / rel
            try:
                mode = file_mode(path.stat())
                digest, size = batch.add_file(path)
            except FileNotFoundError:  # removed meanwhile
                continue
            entries.append(TreeEntry(rel, digest, size, mode))
        # Staged last, so it is renamed into place after every entry it names.
        return batch.put_bytes(encode_tree(entries))
