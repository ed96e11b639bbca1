"""Checkout: placing a cached output in the workspace, as a copy (reflinked where the
filesystem shares extents), hard link or symbolic link, every blob verified against its hash
(a blob of a local pack this command wrote from bytes it had just verified is decoded and
size-checked, not hashed again: see `LocalCache.trusted_packs`).

A tree is built whole in a hidden sibling folder, files placed in parallel, then swapped
into place (renameat2 exchange where available), so `dest` is either the old output or the
complete new one, never a mix. Files of the old output that already match are linked into
the new tree instead of copied. Files are created in several folders at once, before
anything is deleted, and inodes are kept (linked) rather than freed and reallocated:
creating a file is what checkout pays for (docs/benchmarks.md says where that time goes).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import os
import pathlib
import re
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pivot._fs import remove_path, remove_quietly, umask, write_new
from pivot.cache.hashing import DIR, TreeEntry, copy_hashing, hash_file
from pivot.cache.parallel import run_slices
from pivot.errors import CacheCorrupt, DamagedBlob, PivotError, writing

if TYPE_CHECKING:
    from pivot.cache.objects import LocalCache

_RENAME_EXCHANGE = 2
_FICLONE = 0x40049409  # ioctl: share `source`'s extents (reflink)
_AT_FDCWD = -100
# The hidden siblings a checkout builds `.<name>.pivot-tmp-<id>` in (and moves the old
# output aside to, `-old-`): left behind only by a killed process.
_LEFTOVER = re.compile(r"\.(.+)\.pivot-(?:tmp|old)-[0-9a-f]{12}")


class LinkMode(enum.StrEnum):
    """How a checkout places a cached file into the workspace."""

    COPY = "copy"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"


class Leftovers:
    """The hidden temp siblings that killed checkouts left, found by listing each folder
    once (the leftovers are those of earlier commands); one per LocalCache. Folders are
    known by their (device, inode), so a folder reached through a descriptor path
    (`/proc/self/fd/N`, whose number is reused) is never taken for another."""

    def __init__(self) -> None:
        # folder (st_dev, st_ino) -> output name -> its leftover siblings
        self._found: dict[tuple[int, int], dict[str, list[str]]] = {}
        self._lock = threading.Lock()

    def take(self, folder_fd: int, name: str) -> list[str]:
        """The leftover siblings of `name` in the open folder `folder_fd`, each returned
        once."""
        st = os.fstat(folder_fd)
        key = (st.st_dev, st.st_ino)
        with self._lock:
            found = self._found.get(key)
            if found is None:
                found = {}
                for entry in os.listdir(folder_fd):
                    if match := _LEFTOVER.fullmatch(entry):
                        found.setdefault(match.group(1), []).append(entry)
                self._found[key] = found
            return found.pop(name, [])


# One placed file: its path relative to the output ("" for a file output), its hash, and
# its stat as written when the checkout took it on the file's descriptor (else None).
Placed = tuple[str, str, "os.stat_result | None"]


def checkout(
    cache: LocalCache,
    digest: str,
    kind: str,
    dest: pathlib.Path,
    mode: LinkMode = LinkMode.COPY,
    refetch: Callable[[str, str], object] | None = None,
) -> list[Placed]:
    """Place an output at `dest` from the cache; returns a `Placed` per file.

    `dest` is replaced atomically: it holds the old content until the new content is
    complete; an interrupted or failed checkout leaves it as it was and removes its
    temp files. Every blob placed is verified against its hash (copies while they are
    copied, links before linking): a damaged one is set aside (`LocalCache.damaged`), then
    `refetch(digest, kind)` may bring the output's missing blobs again and the checkout
    is retried; without it, or if the same blob is damaged twice, DamagedBlob is raised.
    The folder of `dest` must exist (`Project.write_path` makes it without following
    links); nothing here follows a link in it.
    """
    mode = LinkMode(mode)
    remove_leftovers(cache, dest)
    seen: set[str] = set()
    while True:
        try:
            return _checkout(cache, digest, kind, dest, mode)
        except DamagedBlob as exc:
            if refetch is None or exc.digest in seen:
                raise
            seen.add(exc.digest)
            damage = exc
        try:
            refetch(digest, kind)
        except PivotError as failed:
            raise damage.reworded(f"{damage} Fetching it again failed: {failed}") from failed


def remove_leftovers(cache: LocalCache, dest: pathlib.Path) -> None:
    """Remove the hidden temp siblings of `dest` that a killed checkout left (callers
    hold the project's command lock, so none is in use). Each folder is listed once:
    the leftovers are those of earlier commands. `dest` lies in a folder the caller
    pinned (`Project.pinned_folder`): the folder is opened once and every leftover is
    removed relative to it, never following a link."""
    try:
        fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        for name in cache.leftovers.take(fd, dest.name):
            _remove_at(fd, name)
    finally:
        os.close(fd)


def _remove_at(folder_fd: int, name: str) -> None:
    """Remove the entry `name` of the open folder `folder_fd` (a folder tree with
    `shutil.rmtree`), following no link; one that cannot be removed stays."""
    import shutil

    with contextlib.suppress(OSError):
        st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=folder_fd)
        else:
            os.unlink(name, dir_fd=folder_fd)


def _checkout(
    cache: LocalCache, digest: str, kind: str, dest: pathlib.Path, mode: LinkMode
) -> list[Placed]:
    try:
        with writing(dest):
            if kind == DIR:
                entries = cache.tree(digest)
                stats = _checkout_tree(cache, digest, entries, dest, mode)
                return [(e.relpath, e.hash, stats.get(e.relpath)) for e in entries]
            _checkout_file(cache, digest, dest, mode)
            return [("", digest, None)]
    except Mismatch as exc:
        raise cache.damaged(exc.digest, dest) from None
    except DamagedBlob as exc:
        error = exc.reworded(f"{exc} Nothing was placed at {dest}.")
        error.path = dest
        raise error from None


def _checkout_file(cache: LocalCache, digest: str, dest: pathlib.Path, mode: LinkMode) -> None:
    tmp = _sibling(dest, "tmp")
    src = cache.path(digest)
    try:
        if src.is_file() or digest not in cache.packs.blobs():
            _PLACE[mode](str(src), tmp, digest, 0o644)
        else:  # packed blobs are always placed as copies
            write_new(tmp, cache.packs.read(digest), 0o644)
            os.chmod(tmp, 0o644)
        _swap(tmp, dest)
    except BaseException:
        remove_quietly(tmp)
        raise


def _checkout_tree(
    cache: LocalCache, digest: str, entries: list[TreeEntry], dest: pathlib.Path, mode: LinkMode
) -> dict[str, os.stat_result]:
    """Build the tree in a hidden sibling, then swap it in; returns the stats of the files
    written from packed blobs, taken on their descriptors once complete (nothing changes
    them after: the swap renames their folder, not them)."""
    build = TreeBuild(cache, digest, entries, dest, mode)
    try:
        build.place(entries)
        build.swap()
    except BaseException:
        build.discard()
        raise
    return build.stats


class TreeBuild:
    """A tree output being built in a hidden sibling of `dest` (its folders made at once),
    then swapped into place: `dest` is either the old output or the complete new one,
    never a mix. Entries are placed from the cache (`place`, verified as they are copied or
    linked), from any thread, or by the caller from content it verified against the
    entry's hash, created relative to `folder_fd` (`streamed.StreamedTree`). `stats` holds
    the stat of each file `place` wrote from packed bytes, taken on its descriptor.
    `discard` removes what was built."""

    def __init__(
        self,
        cache: LocalCache,
        digest: str,
        entries: list[TreeEntry],
        dest: pathlib.Path,
        mode: LinkMode,
    ) -> None:
        self.cache = cache
        self.digest = digest
        self.dest = dest
        self.tmp = _sibling(dest, "tmp")
        self.stats: dict[str, os.stat_result] = {}
        os.mkdir(self.tmp)
        try:
            folders: set[str] = set()
            for parent in {entry.relpath.rpartition("/")[0] for entry in entries}:
                while parent and parent not in folders:
                    folders.add(parent)
                    parent = parent.rpartition("/")[0]
            for folder in sorted(folders):  # parents sort before their children
                os.mkdir(os.path.join(self.tmp, folder))
            self._fd = os.open(
                self.tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except BaseException:
            remove_quietly(self.tmp)
            raise
        self.umask = umask(fresh=True)  # the bits a new file loses (then chmod-ed back)
        self._mode = mode
        # Files of the previous output that are already right are linked into the new
        # tree rather than copied: no new inode, and none freed when the old tree goes.
        self._old = str(dest) if mode is not LinkMode.HARDLINK and _is_folder(dest) else None

    @property
    def folder_fd(self) -> int:
        """A descriptor of the new tree's folder (files written from bytes are created
        relative to it: no lookup of the path above it per file)."""
        return self._fd

    def place(self, entries: list[TreeEntry]) -> None:
        """Place `entries` from the cache, one thread per folder, largest first: the kernel
        serializes the creations in a folder, and threads waiting for it spin. On ext4
        shortly after many deletions, when each creation scans past recently freed
        inodes, four threads filling one 10,000-file folder burned twice the CPU of one
        for no less time."""
        by_folder: dict[str, list[TreeEntry]] = {}
        for entry in entries:
            by_folder.setdefault(entry.relpath.rpartition("/")[0], []).append(entry)
        place = _PLACE[self._mode]
        umask = self.umask
        old = self._old
        objects = str(self.cache.objects)
        symlink = self._mode is LinkMode.SYMLINK
        copy = self._mode is LinkMode.COPY
        packed = self.cache.packs.blobs()
        reader = self.cache.packs.reader(frozenset(self.cache.trusted_packs))
        read_packed = reader.read
        stats = self.stats
        # Paths built by concatenation (relpaths are validated and use "/"): three
        # `os.path.join` per file were a tenth of placing 100,000 packed blobs.
        tmp_slash = f"{self.tmp}/"

        def put_entry(entry: TreeEntry) -> None:
            digest = entry.hash
            src = f"{objects}/{digest[:2]}/{digest[2:]}"
            target = tmp_slash + entry.relpath
            if old is not None and _reuse(f"{old}/{entry.relpath}", target, entry, src, symlink):
                return
            where = packed.get(digest)
            if where is None or (not copy and os.path.exists(src)):
                place(src, target, digest, entry.mode, entry.size, entry.mode & umask)
            else:  # packed blobs are always placed as copies
                data = read_packed(digest, where)
                stats[entry.relpath] = write_new(target, data, entry.mode, bool(entry.mode & umask))

        def put(entry: TreeEntry) -> None:
            try:
                put_entry(entry)
            except _WrongSize as exc:
                raise self.wrong_size(entry, exc.size) from None

        folders_by_size = sorted(by_folder.values(), key=len, reverse=True)
        with reader:
            run_slices(put, folders_by_size, len(entries))

    def wrong_size(self, entry: TreeEntry, size: int) -> CacheCorrupt:
        """The error for a verified blob of `size` bytes where `entry` records another."""
        return CacheCorrupt(
            f"The tree manifest {self.digest} of {self.dest} records {entry.size} bytes for "
            f"{entry.relpath!r}, but the cache object {entry.hash} it names holds "
            f"{size} bytes and matches its hash: the manifest is wrong, the "
            f"object is good. Nothing was placed at {self.dest}.",
            self.digest,
            path=self.dest,
            hint="rerun-stage",
        )

    def swap(self) -> None:
        """Put the complete tree at `dest`, replacing what is there."""
        os.close(self._fd)
        self._fd = -1
        _swap(self.tmp, self.dest)

    def discard(self) -> None:
        """Remove the tree built so far (`dest` stays as it was)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        remove_quietly(self.tmp)


class Mismatch(Exception):
    """A cache object's bytes do not match its hash, found while placing it (here, or by
    `streamed` for a pulled tree): the caller turns it into DamagedBlob, setting the
    object aside."""

    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


class _WrongSize(Exception):
    """A cache object matches its hash but not the size its tree manifest records: the
    manifest is wrong, not the object (the caller names the manifest)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _check(digest: str, size: int, actual: str, copied: int) -> None:
    """Raise Mismatch if the bytes read do not hash to `digest`, else _WrongSize if they
    are not the `size` expected (unless -1)."""
    if actual != digest:
        raise Mismatch(digest)
    if size >= 0 and copied != size:
        raise _WrongSize(copied)


def _copy_file(src: str, dest: str, digest: str, mode: int, size: int = -1, chmod: int = 1) -> None:
    """Create `dest` (it must not exist) as a copy of `src` with permission bits `mode`,
    verifying that the bytes placed hash to `digest` (else `dest` is removed)."""
    source = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            if chmod:  # the umask removed some of the bits
                os.fchmod(target, mode)
            copied, actual = _clone_or_copy(source, target, size)
        finally:
            os.close(target)
    finally:
        os.close(source)
    if actual != digest or (size >= 0 and copied != size):
        remove_quietly(dest)
    _check(digest, size, actual, copied)


def _clone_or_copy(source: int, target: int, size: int) -> tuple[int, str]:
    """Reflink `source` into `target` where the filesystem shares extents (then hash the
    object), else copy it while hashing; returns (bytes, hash of the object's bytes)."""
    import fcntl

    try:
        fcntl.ioctl(target, _FICLONE, source)
    except OSError:
        return copy_hashing(source, target, size)
    return copy_hashing(source, None, size)


def _verify_object(src: str, digest: str, size: int = -1) -> None:
    """Hash the cache object `src` before it is linked into the workspace."""
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        copied, actual = copy_hashing(fd, None, size)
    finally:
        os.close(fd)
    _check(digest, size, actual, copied)


def _link(src: str, dest: str, digest: str, mode: int, size: int = -1, chmod: int = 1) -> None:
    """Hard-link `src` once verified; across filesystems (EXDEV), where no link can exist,
    copy it."""
    _verify_object(src, digest, size)
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_file(src, dest, digest, mode, size, chmod=1)


def _symlink(src: str, dest: str, digest: str, mode: int, size: int = -1, chmod: int = 1) -> None:
    _verify_object(src, digest, size)
    os.symlink(src, dest)


_PLACE: dict[LinkMode, Callable[..., None]] = {
    LinkMode.COPY: _copy_file,
    LinkMode.HARDLINK: _link,
    LinkMode.SYMLINK: _symlink,
}


def _reuse(old: str, target: str, entry: TreeEntry, src: str, symlink: bool) -> bool:
    """Link `old` (a file of the output being replaced) to `target` if it already is what
    the checkout would place there: an unshared copy with the entry's content and mode,
    or a symlink to the entry's cache object."""
    try:
        st = os.lstat(old)
        if symlink:
            if not stat.S_ISLNK(st.st_mode) or os.readlink(old) != src:
                return False
            _verify_object(src, entry.hash, entry.size)
        elif not (
            stat.S_ISREG(st.st_mode)
            and st.st_nlink == 1
            and st.st_size == entry.size
            and stat.S_IMODE(st.st_mode) == entry.mode
            and hash_file(old) == entry.hash
        ):
            return False
        os.link(old, target, follow_symlinks=False)
    except OSError:
        return False
    return True


def _is_folder(path: pathlib.Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _sibling(dest: pathlib.Path, kind: str) -> str:
    return os.path.join(dest.parent, f".{dest.name}.pivot-{kind}-{os.urandom(6).hex()}")


def _swap(tmp: str, dest: pathlib.Path) -> None:
    """Put `tmp` at `dest`, replacing what is there; readers see the old or the new."""
    try:
        os.rename(tmp, dest)
        return
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise
    if _exchange(tmp, dest):
        old = tmp
    else:
        old = _sibling(dest, "old")
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
    try:
        remove_path(pathlib.Path(old))
    except BaseException:
        remove_quietly(old)
        raise


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    import ctypes

    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _exchange(a: str, b: pathlib.Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where unsupported."""
    import ctypes

    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))
