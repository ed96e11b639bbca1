"""The files of a streamed tree checkout (`streamed.StreamedTree`), created by a child
process of their own: creating many files is kernel work serialized by the folder's lock,
and the Python around each creation, done in the pulling process, waited for the
interpreter lock the fetch threads hold. In a child it has a lock and a core of its own.
Why: docs/benchmarks.md, "The 100,000-file pull: the files created by a child process".

The parent sends frames (`FRAME` header, the path relative to the new tree's folder, the
content) on the child's stdin; the child creates each file relative to the folder's
descriptor it inherited (`write_at`: `O_EXCL | O_NOFOLLOW`, nothing outside that folder)
and answers on the reply descriptor it inherited, in order, one `REPLY` record per file:
its (size, mtime_ns, inode, ctime_ns) as written, or, for a file it could not create,
(-1, errno, 0, 0), and then it stops. It starts by sending `HELLO`, and stops at the end of
its input (the parent closed it, or died)."""

from __future__ import annotations

import contextlib
import os
import struct
import sys

# Per file from the parent: path length, content length, permission bits, whether to set
# them exactly (the umask removed some); then the path (UTF-8 or surrogate-escaped bytes)
# and the content.
FRAME = struct.Struct("<IIHB")
# Per file from the child: size, mtime_ns, inode, ctime_ns (size -1: failed, with errno).
REPLY = struct.Struct("<qqqq")
HELLO = b"pivot-tree-writer 1\n"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = 1 << 20
_REPLIES = 512  # replies sent together


def write_at(
    folder_fd: int, rel: str | bytes, data: bytes | memoryview, mode: int, exact: bool
) -> os.stat_result:
    """Create `rel` (it must not exist) in the open folder `folder_fd`, following no link
    at its end, holding `data` with permission bits `mode` (set exactly if `exact`);
    returns its stat. A file that could not be written whole is removed."""
    fd = os.open(rel, _CREATE, mode, dir_fd=folder_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if exact:
                os.fchmod(fd, mode)
            return os.fstat(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(rel, dir_fd=folder_fd)
        raise


def serve(folder_fd: int, inp: int, out: int) -> int:
    """The child's loop: create the files framed on `inp` in `folder_fd`, reply on `out`;
    returns the exit status."""
    reader = os.fdopen(inp, "rb", buffering=_READ)
    header_size = FRAME.size
    unpack = FRAME.unpack
    pack = REPLY.pack
    replies: list[bytes] = []

    def flush() -> None:
        view = memoryview(b"".join(replies))
        while view:
            view = view[os.write(out, view) :]
        replies.clear()

    os.write(out, HELLO)
    status = 0
    while True:
        header = reader.read(header_size)
        if len(header) < header_size:
            break  # end of input (a partial header: the parent died mid-frame)
        name_len, data_len, mode, exact = unpack(header)
        body = reader.read(name_len + data_len)
        if len(body) < name_len + data_len:
            break
        view = memoryview(body)
        try:
            st = write_at(folder_fd, bytes(view[:name_len]), view[name_len:], mode, bool(exact))
        except OSError as exc:
            replies.append(pack(-1, exc.errno or 0, 0, 0))
            status = 1
            break
        replies.append(pack(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        if len(replies) >= _REPLIES:
            flush()
    flush()
    return status


if __name__ == "__main__":  # python -m pivot.cache.tree_writer FOLDER_FD REPLY_FD
    sys.exit(serve(int(sys.argv[1]), sys.stdin.fileno(), int(sys.argv[2])))
