"""Installed distributions and their versions, found for a top-level module name.

Third-party code counts in a fingerprint as `dist:<name>` = its version. The dist-info
folder next to the module answers in most cases; `importlib.metadata` is the slow fallback.
Modules are located with `importlib.util.find_spec`, which never imports them. The version
is the `Version:` header of the distribution's METADATA (what `importlib.metadata` says),
not the dist-info folder's name, which an edit in place leaves as it was; `metadata_file`
names the file read, so that a memo of the verdict can record its stat key.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

_DISTS: dict[str, list[tuple[str, str]]] = {}
_SITE_LISTINGS: dict[str, list[str]] = {}
_SITE_TOP_LEVEL: dict[str, dict[str, list[tuple[str, str]]]] = {}
_PKG_DISTS: dict[str, list[str]] | None = None
_SPECS: dict[str, tuple[str | None, tuple[str, ...]] | None] = {}
_FILES: dict[str, str] = {}  # distribution name -> the metadata file its version came from
_MAX_HEADER = 65_536


def spec_location(top: str) -> tuple[str | None, tuple[str, ...]] | None:
    """(origin file, package folders) of a top-level module, found without importing it."""
    if top in _SPECS:
        return _SPECS[top]
    try:
        spec = importlib.util.find_spec(top)
    except Exception:  # e.g. a module in sys.modules without __spec__
        spec = None
    found = None
    if spec is not None:
        origin = spec.origin if spec.has_location else None
        found = (origin, tuple(spec.submodule_search_locations or ()))
    _SPECS[top] = found
    return found


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _dist_name(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _header_version(path: str) -> str | None:
    """The `Version:` header of a METADATA / PKG-INFO file (untrusted: a printable value of
    at most 200 characters, found before the first blank line), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_MAX_HEADER)
    except OSError:
        return None
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            break
        if line[:8].lower() == b"version:":
            value = line[8:].strip().decode("utf-8", "replace")
            return value if 0 < len(value) <= 200 and value.isprintable() else None
    return None


def _versioned(site: str, entry: str, name: str, version: str) -> tuple[str, str]:
    """(distribution name, version) of a dist-info folder: its METADATA's version (the
    folder name's when unreadable), the file read remembered."""
    path = os.path.join(site, entry, "METADATA")
    dist = _dist_name(name)
    _FILES[dist] = path
    return (dist, _header_version(path) or version)


def metadata_file(name: str) -> str | None:
    """The metadata file the version of distribution `name` was read from, if known."""
    return _FILES.get(name)


def _site_dists(site: str) -> list[tuple[str, str]]:
    """(name, version) of the `*.dist-info` folders in one sys.path folder."""
    listing = _SITE_LISTINGS.get(site)
    if listing is None:
        try:
            listing = os.listdir(site)
        except OSError:
            listing = []
        _SITE_LISTINGS[site] = listing
    found = []
    for entry in listing:
        if entry.endswith(".dist-info"):
            name, sep, version = entry[: -len(".dist-info")].partition("-")
            if sep:
                found.append((name, version))
    return found


def _dist_from_site(site: str, top: str) -> list[tuple[str, str]]:
    """Fast path: the dist-info next to the module, by name or by its top_level.txt."""
    dists = _site_dists(site)
    wanted = _norm(top)
    same = [(n, v) for n, v in dists if _norm(n) == wanted]
    if len(same) == 1:
        name, version = same[0]
        return [_versioned(site, f"{name}-{version}.dist-info", name, version)]
    mapping = _SITE_TOP_LEVEL.get(site)
    if mapping is None:
        mapping = {}
        for name, version in dists:
            txt = os.path.join(site, f"{name}-{version}.dist-info", "top_level.txt")
            try:
                with open(txt, encoding="utf-8") as fh:
                    tops = fh.read().split()
            except OSError:
                continue
            for module in tops:
                mapping.setdefault(module, []).append((name, version))
        _SITE_TOP_LEVEL[site] = mapping
    found = mapping.get(top, ())
    return sorted({_versioned(site, f"{n}-{v}.dist-info", n, v) for n, v in found})


def _dist_from_metadata(top: str) -> list[tuple[str, str]]:
    """Slow path through importlib.metadata (imported only here: it costs ~50 ms)."""
    global _PKG_DISTS
    from importlib import metadata

    try:
        return [_from_distribution(metadata.distribution(top), top)]
    except Exception:
        pass
    if _PKG_DISTS is None:
        try:
            _PKG_DISTS = metadata.packages_distributions()
        except Exception:
            _PKG_DISTS = {}
    found = []
    for name in sorted(set(_PKG_DISTS.get(top, ()))):
        try:
            found.append(_from_distribution(metadata.distribution(name), name))
        except Exception:
            continue
    return found


def _from_distribution(dist: Any, name: str) -> tuple[str, str]:
    """(name, version) of an `importlib.metadata` distribution, the file read remembered
    when it is a folder's (dist-info METADATA or egg-info PKG-INFO)."""
    version = dist.version
    if not isinstance(version, str):
        raise TypeError(version)
    folder = getattr(dist, "_path", None)  # a PathDistribution's folder
    if folder is not None:
        for file in ("METADATA", "PKG-INFO"):
            path = os.path.join(str(folder), file)
            if os.path.isfile(path):
                _FILES[_dist_name(name)] = path
                break
    return (_dist_name(name), version)


def dists_in(folder: str, top: str) -> list[tuple[str, str]]:
    """The distributions whose dist-info is in `folder` that provide top-level module `top`
    there: a namespace package's portion in another folder is not their code."""
    return _dist_from_site(folder, top)


def dists(top: str) -> list[tuple[str, str]]:
    """Installed distributions providing the top-level module `top`: [(name, version)]."""
    found = _DISTS.get(top)
    if found is not None:
        return found
    found = []
    module = sys.modules.get(top)
    if module is not None:
        file = getattr(module, "__file__", None)
        paths = list(getattr(module, "__path__", None) or ())
    else:  # imported inside a function that has not run
        file, paths = spec_location(top) or (None, [])
    site = None
    if file:
        site = os.path.dirname(file)
        if os.path.basename(file).startswith("__init__."):
            site = os.path.dirname(site)
    elif paths:
        site = os.path.dirname(paths[0])
    if site:
        found = _dist_from_site(site, top)
    if not found:
        found = _dist_from_metadata(top)
    _DISTS[top] = found
    return found


def clear() -> None:
    """Forget every distribution and module location found by this process."""
    global _PKG_DISTS
    _DISTS.clear()
    _SITE_LISTINGS.clear()
    _SITE_TOP_LEVEL.clear()
    _SPECS.clear()
    _FILES.clear()
    _PKG_DISTS = None
