"""Pausing Python's cyclic garbage collector while a one-shot command builds what it keeps.

Loading the pipelines and planning a run build tens of thousands of objects (stage specs,
lock files, fingerprints) that live until the command exits. With the collector on, each
of them is traversed by several collections while it is built, which costs about a tenth
of a no-op `run --all`'s CPU at 2,000 stages and frees nothing. `collector_paused` turns the
collector off for that stretch, then freezes what exists (`gc.freeze`: later collections
skip it, and forked workers share those pages untouched) and turns it back on. Memory is
still freed by reference counting meanwhile; only objects in reference cycles made during
the pause stay until exit, so it is for one-shot commands, not for a long-lived process
such as `watch`. A process forked during the pause (a worker) starts with the collector on.
`collector_off` only turns it off for a stretch, freezing nothing (so any process may use
it): storing a directory output of many files, whose tuples would otherwise be traversed
along with everything the stage left in its process.

The CLI also pauses it while it imports click and the module of the command that runs
(modules, classes and functions live as long as the process anyway): about 30 collections
of a no-op `run` that freed nothing.
"""

from __future__ import annotations

import contextlib
import gc
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

_paused = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside; what exists at the end is frozen."""
    global _paused
    if _paused or not gc.isenabled():  # nested, or turned off by the embedding program
        yield
        return
    gc.disable()
    _paused = True
    try:
        yield
    finally:
        _paused = False
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """No cyclic garbage collection inside, and nothing frozen: for a stretch that builds
    many short-lived objects in any process (storing a directory output of 100,000 files
    made its stage's child traverse every object of the stage several times). Garbage
    cycles made inside are collected by the next collection after it."""
    if not gc.isenabled():  # nested, paused, or turned off by the embedding program
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _resume_in_child() -> None:
    """A child forked during a pause runs stage code: its collector is on."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()


os.register_at_fork(after_in_child=_resume_in_child)
