"""Cache objects the workspace shares through a hard or symbolic link: an edit of such an
output in place edits the object. Their stat is recorded when they are linked (after the
checkout verified them), so that one stat tells whether one may have changed since, and
only then is it hashed again."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from pivot import _racy
from pivot.cache.hashing import DIR, hash_file

if TYPE_CHECKING:
    from pivot.cache.objects import LocalCache
    from pivot.cache.state import StateDB

# Stat cache entries of linked objects: a key no project path can have (NUL is refused).
KEY_PREFIX = "\0linked-object/"


def remember(
    state: StateDB, cache: LocalCache, digest: str, made: tuple[int, int] | None, wall_ns: int
) -> None:
    """Record the stat of the loose object `digest`, just verified and linked; smudged
    (still recorded: it is checked) unless it changed before the racy marker `made`, made
    after the link (`pivot._racy`; 2 s before `wall_ns` where it does not apply)."""
    path = cache.path(digest)
    if path.is_file():
        st = path.stat()
        state.record(KEY_PREFIX + digest, st, digest, _racy.settled(made, st, wall_ns))


def damaged_objects(state: StateDB, cache: LocalCache, digest: str, kind: str) -> list[str]:
    """The linked loose objects of an output (a file, or a tree's entries) that no longer
    match their hash. Objects never linked are trusted (nothing in the workspace shares
    them); a linked one whose stat is unchanged is intact; any other is hashed again."""
    digests = [digest]
    if kind == DIR and cache.path(digest).is_file():
        digests = [e.hash for e in cache.tree(digest)]
    bad = []
    made: tuple[int, int] | None = None
    wall_ns = 0  # once a marker is made, before the first object is hashed again
    for blob in dict.fromkeys(digests):
        key = KEY_PREFIX + blob
        if not state.recorded(key):
            continue
        path = cache.path(blob)
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # absent: `missing` says so
        if state.lookup(key, st) == blob:
            continue
        if not wall_ns:
            wall_ns = time.time_ns()
            made = _racy.made_after_writes(str(cache.tmp_dir), 0)
        if hash_file(path) == blob and os.stat(path).st_ctime_ns == st.st_ctime_ns:
            state.record(key, st, blob, _racy.settled(made, st, wall_ns))
        else:
            bad.append(blob)
    return bad
