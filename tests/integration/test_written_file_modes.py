"""The files Pivot writes by replacing them atomically (lock files, `.gitignore`s, the
committed config, a local-folder remote's packs and indexes) get the permission bits of
any new file under the user's umask, as git and DVC write theirs, so that a colleague
sharing the checkout or the remote folder can read them; `config.local.yaml`, which may
hold credentials, stays readable by its owner only."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest
from support import write_files

UMASK = 0o002  # group-writable: what a shared project or remote folder is set up with

PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return "made"


pipeline.register(make)
"""


@pytest.fixture
def shared_umask():
    old = os.umask(UMASK)
    yield
    os.umask(old)


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask_and_the_local_config_stays_private(
    project, pivot, tmp_path, shared_umask
):
    write_files(project, {"pipeline.py": PIPELINE})
    store = tmp_path / "store"
    store.mkdir()
    pivot("remote", "add", "-d", "origin", str(store))
    pivot("remote", "modify", "--local", "origin", "jobs", "4")
    pivot("run")
    pivot("push")
    expected = 0o666 & ~UMASK
    written = [
        project / ".pivot" / "stages" / "p" / "make.lock",
        project / ".gitignore",
        project / ".pivot" / "config.yaml",
        *(p for p in store.rglob("*") if p.is_file()),
    ]
    assert len(written) > 4  # the remote holds a pack and an index at least
    assert {str(p): oct(_mode(p)) for p in written} == {str(p): oct(expected) for p in written}
    assert oct(_mode(project / ".pivot" / "config.local.yaml")) == oct(0o600)


DIR_PIPELINE = """
import pathlib
from typing import Annotated

import pivot
from pivot.define.loaders import PathOnly

pipeline = pivot.Pipeline("p")


def make() -> Annotated[pathlib.Path, pivot.Out("out", PathOnly())]:
    out = pathlib.Path("out")
    out.mkdir()
    (out / "a.txt").write_text("a")
    (out / "run.sh").write_text("#!/bin/sh\\n")
    (out / "run.sh").chmod(0o755)
    return out


pipeline.register(make)
"""


def test_under_umask_027_checkout_places_recorded_modes_and_replaced_files_follow_it(
    project, pivot
):
    """One umask, read once (pivot._fs.umask), decides both: a checked-out file gets its
    recorded mode exactly (chmod-ed where the umask removed bits of it), a file replaced
    atomically gets 0o666 less the umask."""
    write_files(project, {"pipeline.py": DIR_PIPELINE})
    old = os.umask(0o027)
    try:
        pivot("run")
        for path in sorted((project / "out").iterdir()):
            path.unlink()
        (project / "out").rmdir()
        pivot("checkout")
    finally:
        os.umask(old)
    assert oct(_mode(project / "out" / "a.txt")) == oct(0o644)
    assert oct(_mode(project / "out" / "run.sh")) == oct(0o755)
    for written in (project / ".pivot" / "stages" / "p" / "make.lock", project / ".gitignore"):
        assert oct(_mode(written)) == oct(0o640), written


def _in_child(code: str, mask: str = "027") -> str:
    """What `code` prints in a Python process started under umask `mask`."""
    import subprocess
    import sys

    from support import PYTHONPATH

    done = subprocess.run(
        ["/bin/sh", "-c", f'umask {mask} && exec "$0" -c "$1"', sys.executable, code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    return done.stdout.strip()


def test_without_proc_the_umask_is_read_from_a_child_process_never_changed():
    """Where /proc/self/status does not tell it (macOS), the umask comes from a child that
    inherits it; this process's umask is never set, not even for a moment."""
    code = (
        "import os, threading\n"
        "from pivot import _fs\n"
        "_fs._proc_umask = lambda: None\n"  # as on a system without /proc
        "seen = []\n"
        "stop = threading.Event()\n"
        "def watch():\n"
        "    while not stop.is_set():\n"
        "        seen.append(open('/proc/self/status').read().split('Umask:')[1].split()[0])\n"
        "t = threading.Thread(target=watch)\n"
        "t.start()\n"
        "found = _fs.umask()\n"
        "stop.set()\n"
        "t.join()\n"
        "print(oct(found), sorted(set(seen)))\n"
    )
    assert _in_child(code) == "0o27 ['0027']"
    assert _in_child("from pivot import _fs; print(oct(_fs.umask()))", "0002") == "0o2"


@pytest.mark.parametrize(
    ("text", "mask"),
    [
        (b"0022", 0o022),
        (b"077", 0o077),
        (b"0", 0),
        *((bad, None) for bad in (b"", b"0o22", b"0800", b"17777", b"u=rwx", b"1000", b" 022")),
    ],
)
def test_a_reported_umask_is_read_strictly(text, mask):
    from pivot._fs import _octal_mask

    assert _octal_mask(text) == mask
