"""The racy marker: when a file's stat key, taken now, may be remembered as proof that the
file did not change since.

A file changed within the same tick of the file system's clock as its `stat` may change
again with the same stat key (git's "racy" entries). A `Marker` settles this on the file
system's own clock: before the first `stat` it judges, it creates or opens a marker
file in the project's tmp folder, sets its times to now and takes M, the earlier of its
mtime and ctime as `fstat` gives them: a time no later than any `stat` that follows. A
file (or folder) stat-ed after that whose mtime and ctime are both before M may be
remembered with that key: any later change to it sets its ctime to M or later (the same
clock, which does not go back; no program sets a ctime), so its key will differ. One
changed at M or later may not (a change within the same tick could keep its key). When the
marker cannot be made, is not a regular file of one link, lies on another device than the
file judged, or its time is whole seconds (a file system whose times are set from another
clock, such as sshfs's client), the caller's wall-clock rule (a file changed more than a
few seconds ago) holds.
Like git's rule and the wall-clock rules, this trusts the system clock not to be set back
between the marker and a later change of the file.
"""

from __future__ import annotations

import os
import re
import stat
import time

MARKER = "racy.marker"  # in the project's tmp folder
# Not O_TRUNC: a marker hard-linked to a file elsewhere is refused before anything changes.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_SECOND = 1_000_000_000
# How long `made_after_writes` waits for the file system's clock to move on (a tick of a
# coarse clock is 1-10 ms); past it, the first marker is kept (files of its tick unsettled).
TICK_WAIT_S = 0.05
# The wall-clock rule of `settled` where the marker does not apply: changed 2 s before.
WALL_NS = 2 * _SECOND


class Marker:
    """A command's racy marker in the folder `folder`, made at the first `made`."""

    __slots__ = ("_made", "folder")

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._made: tuple[int, int] | None = None  # (device, M); (-1, -1): not made

    def made(self) -> tuple[int, int] | None:
        """The marker's device and M, the marker being made at the first call (call it
        before the `stat` it is to judge); None when it cannot be made."""
        if self._made is None:
            self._made = _make(self.folder)
        return self._made if self._made[0] >= 0 else None


def made_after_writes(folder: str, wait_s: float = TICK_WAIT_S) -> tuple[int, int] | None:
    """A marker made in `folder` that every file changed before the call is before: after
    a first marker M0, it is made again until its time is later than M0 (at most a tick of
    the file system's clock; `wait_s` at most, then M0 itself). A file written just
    before the call has a time no later than M0 (the same clock), so it is settled by a
    stat taken after this returns, while a file written in the same tick as a marker of
    M0 alone would not be. With `wait_s` 0 it is made twice, without waiting: where the
    kernel gives a change that follows a `stat` of the same file a fine-grained time
    (Linux 6.13 and later on ext4, xfs, btrfs and tmpfs: "multigrain" timestamps), the
    second time is already past M0; elsewhere it is M0, and files of its tick stay
    unsettled. Made anew on each call (not the command's `Marker`: that one was made
    before these files were written). None when the marker cannot be made."""
    first = _make(folder)
    if first[0] < 0:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        made = _make(folder)
        if made[0] != first[0]:
            return None
        if made[1] > first[1]:
            return made
        if time.monotonic() > deadline:
            return first
        time.sleep(0.0002)


def before(made: tuple[int, int] | None, st: os.stat_result) -> bool | None:
    """Whether the file of `st` (stat-ed after `made`) changed before the marker: its key
    may be remembered; None when the marker does not apply (none, or another device)."""
    if made is None or st.st_dev != made[0]:
        return None
    return max(st.st_mtime_ns, st.st_ctime_ns) < made[1]


def settled(made: tuple[int, int] | None, st: os.stat_result, wall_ns: int) -> bool:
    """`before`, or where the marker does not apply, whether the file of `st` changed
    `WALL_NS` before `wall_ns` (the wall clock's time taken before its `stat`)."""
    judged = before(made, st)
    if judged is None:
        return max(st.st_mtime_ns, st.st_ctime_ns) < wall_ns - WALL_NS
    return judged


def _make(folder: str) -> tuple[int, int]:
    try:
        fd = os.open(os.path.join(folder, MARKER), _FLAGS, 0o644)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return (-1, -1)
            os.utime(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
    except (OSError, NotImplementedError):  # `utime` of a descriptor is not everywhere
        return (-1, -1)
    made = min(st.st_mtime_ns, st.st_ctime_ns)
    if made % _SECOND == 0:  # whole seconds: not (only) this file system's own fine clock
        return (-1, -1)
    return (st.st_dev, made)


def mounted_within(folder: str) -> bool:
    """Whether a file system is mounted at `folder` or below it (True when the mount table
    cannot be read): the files of such a folder are not all on its device."""
    folder = os.path.realpath(folder)
    try:
        with open("/proc/self/mountinfo", "rb") as handle:
            table = handle.read()
    except OSError:
        return True
    for line in table.splitlines():
        fields = line.split(b" ")
        if len(fields) < 5:
            return True
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
        point_text = os.fsdecode(point)
        if point_text == folder or point_text.startswith(folder.rstrip("/") + "/"):
            return True
    return False
