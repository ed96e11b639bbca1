"""The kernel's floor for the 100,000-file rows of the scale section: what creating N files
of 1 KB in one new folder (`create`: the syscalls a pull's checkout makes per file,
`openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `write`, `fstat`, `close`) or stat-ing every file
of a folder (`stat`: what a no-op run's check makes) or opening, reading and closing each
(`read`: what storing a directory output makes) costs in a bare Python loop, as user
and system CPU seconds of this process. Run it just before and after the Pivot command it
is compared with: on a loaded VM the same loop's system time moves several-fold between
runs (docs/benchmarks.md, "The 100,000-file pull: kernel or Pivot").

    python bench/kernel_floor.py create DEST [--files 100000]   # DEST must not exist
    python bench/kernel_floor.py stat FOLDER
    python bench/kernel_floor.py read FOLDER
"""

from __future__ import annotations

import argparse
import os
import resource

CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create(dest: str, files: int) -> None:
    """Create `files` files of 1 KB in the new folder `dest`, relative to its descriptor."""
    os.mkdir(dest)
    folder = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    data = b"x" * 1024
    try:
        for i in range(files):
            fd = os.open(f"f{i:06d}.txt", CREATE, 0o644, dir_fd=folder)
            try:
                os.write(fd, data)
                os.fstat(fd)
            finally:
                os.close(fd)
    finally:
        os.close(folder)


def stat(folder: str) -> int:
    """`lstat` every entry of `folder`; returns how many."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        names = os.listdir(fd)
        for name in names:
            os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
    return len(names)


def read(folder: str) -> int:
    """Open, `fstat`, read whole and close every entry of `folder` (what storing a directory
    output does per file, less the hash); returns how many."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        names = os.listdir(fd)
        for name in names:
            file = os.open(name, flags, dir_fd=fd)
            try:
                os.read(file, os.fstat(file).st_size + 1)
            finally:
                os.close(file)
    finally:
        os.close(fd)
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["create", "stat", "read"])
    parser.add_argument("path")
    parser.add_argument("--files", type=int, default=100_000, help="create: how many")
    args = parser.parse_args()
    if args.kind == "create":
        create(args.path, args.files)
        what = f"created {args.files} files of 1 KB"
    elif args.kind == "read":
        what = f"read {read(args.path)} files"
    else:
        what = f"stat-ed {stat(args.path)} files"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{what}: {usage.ru_utime:.2f} s user, {usage.ru_stime:.2f} s sys (incl. start-up)")


if __name__ == "__main__":
    main()
