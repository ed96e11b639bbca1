"""Project modules run as their source is now: bytecode is trusted only when it records
the hash of the source it came from, never the source's mtime and size.

Python's default cache check compares the source's mtime in whole seconds and its size, so
an edit of the same size within the second of the last import runs the old code (and
fingerprints the old constants). Pivot loads pipeline files and the project's own modules
through `SourceHashLoader`, which keeps "checked hash" bytecode files (PEP 552) in
`__pycache__`, readable by any Python. So do the modules of folders on `sys.path` outside
the project and outside any Python install (a `PYTHONPATH` folder of the user's own code,
which the fingerprint reads as source); the standard library, installed packages and a
virtual environment inside the project load as usual."""

from __future__ import annotations

import _imp
import importlib.machinery
import importlib.util
import marshal
import os
import sys
from collections.abc import Callable
from types import CodeType

_CHECKED_HASH = (0b11).to_bytes(4, "little")  # PEP 552 flags: hash-based, check the source
_HEADER = 16  # magic, flags, the source's 8-byte hash
_INSTALLED: set[str] = set()
# The folder holding the `pivot` package (a source checkout on PYTHONPATH): Pivot's own.
_PIVOT_HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SourceHashLoader(importlib.machinery.SourceFileLoader):
    """A source file's module, from its cached bytecode only when that records the hash
    of the source as read now; otherwise compiled and cached with that hash."""

    def get_code(self, fullname: str) -> CodeType:
        source_path = self.get_filename(fullname)
        source = self.get_data(source_path)
        digest = importlib.util.source_hash(source)
        cache_path = importlib.util.cache_from_source(source_path)
        cached = _cached_code(cache_path, digest)
        if cached is not None:
            # As the standard loader does: the code names this file, not the one it was
            # compiled from (a copied or moved project)
            _imp._fix_co_filename(cached, source_path)
            return cached
        code = self.source_to_code(source, source_path)
        if not sys.dont_write_bytecode:
            header = importlib.util.MAGIC_NUMBER + _CHECKED_HASH + digest
            self.set_data(cache_path, header + marshal.dumps(code))  # atomic; errors ignored
        return code


def _cached_code(cache_path: str, digest: bytes) -> CodeType | None:
    """The code in a bytecode file made from the source whose hash is `digest`, or None
    (absent, stale, of another Python, another kind of check, or damaged)."""
    try:
        with open(cache_path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    header = importlib.util.MAGIC_NUMBER + _CHECKED_HASH + digest
    if data[:_HEADER] != header:
        return None
    try:
        code = marshal.loads(data[_HEADER:])
    except Exception:  # damaged code raises EOFError, ValueError, TypeError, SystemError...
        return None
    return code if isinstance(code, CodeType) else None


def install(root: str) -> None:
    """Load every module found in a folder under `root` (the project), or in a folder of
    no Python install outside it, with `SourceHashLoader` from now on in this process,
    and in processes it forks."""
    root = os.path.abspath(root)
    if root in _INSTALLED:
        return
    _INSTALLED.add(root)
    sys.path_hooks.insert(0, _project_hook(root))
    for entry in [e for e in sys.path_importer_cache if _hashed_folder(e, root)]:
        del sys.path_importer_cache[entry]  # made before, with the default loaders


def _project_hook(root: str) -> Callable[[str], importlib.machinery.FileFinder]:
    loaders = importlib.machinery.FileFinder.path_hook(
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (SourceHashLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
    )

    def hook(entry: str) -> importlib.machinery.FileFinder:
        if not _hashed_folder(entry, root):
            raise ImportError("a folder of a Python install")  # the next hook takes it
        return loaders(entry)  # ImportError for a file (a zip): the next hook takes it

    return hook


def _hashed_folder(entry: str, root: str) -> bool:
    """Whether a sys.path entry is a folder of the project and not of a Python install
    kept inside it (a virtual environment there loads as usual), or a folder outside the
    project and outside every Python install. A project that is itself inside an
    install's folder (`/usr/src/app` beside a system Python in `/usr`) is still the
    project."""
    if not isinstance(entry, str):
        return False
    folder = os.path.abspath(entry or os.getcwd())
    prefixes = {
        os.path.abspath(p)
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    }
    if not _under(folder, root):  # the user's own code on PYTHONPATH, not an install's
        parts = folder.split(os.sep)
        return (
            folder != _PIVOT_HOME
            and not any(_under(folder, prefix) for prefix in prefixes)
            and "site-packages" not in parts
            and "dist-packages" not in parts
        )
    inside = [prefix for prefix in prefixes if _under(prefix, root) and prefix != root]
    if any(_under(folder, prefix) for prefix in inside):
        return False
    parts = os.path.relpath(folder, root).split(os.sep)
    return "site-packages" not in parts and "dist-packages" not in parts


def _under(folder: str, parent: str) -> bool:
    return folder == parent or folder.startswith(os.path.join(parent, ""))
