"""What the helper processes Pivot starts on the other core (`python -I -S` children that
stat a large folder or read lock files while this process loads the pipelines) need from
their parent: how many cores it may use, and a file in memory that hands one its input
(so that starting a helper never waits on it)."""

from __future__ import annotations

import os
from typing import BinaryIO


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory_file(data: bytes) -> BinaryIO:
    """A file holding `data`, positioned at its start, to pass as a helper's stdin; in
    memory where the system allows (`memfd_create`), else an unnamed temp file."""
    if hasattr(os, "memfd_create"):
        file: BinaryIO = open(os.memfd_create("pivot-names", os.MFD_CLOEXEC), "w+b")  # noqa: SIM115
    else:
        import tempfile

        file = tempfile.TemporaryFile()  # noqa: SIM115
    file.write(data)
    file.seek(0)
    return file
