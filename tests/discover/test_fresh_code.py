"""A project module edited to the same size within the same second (so its mtime in whole
seconds is unchanged) runs as edited: Python's cached bytecode must not stand in for it."""

from __future__ import annotations

import os
import pathlib

import pytest
from support import PYTHONPATH, PivotCLI, write_files

PIPELINE = """
from typing import Annotated

import pivot
from lib import SCALE

FACTOR = 5

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return f"{SCALE * FACTOR}"


pipeline.register(make)
"""

# Bytecode caches written as a plain Python (and older Pivot) writes them are kept.
WRITE_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def _edit_keeping_stat(path: pathlib.Path, old: str, new: str) -> None:
    """Replace `old` by `new` (same length) and put the file's mtime back."""
    assert len(old) == len(new)
    before = path.stat()
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [("lib.py", "SCALE = 2", "SCALE = 3", "15"), ("pipeline.py", "FACTOR = 5", "FACTOR = 7", "14")],
)
def test_a_same_size_edit_in_the_same_second_is_run(
    project: pathlib.Path, pivot: PivotCLI, file: str, old: str, new: str, expected: str
) -> None:
    write_files(project, {"pipeline.py": PIPELINE, "lib.py": "SCALE = 2\n"})
    pivot("run", **WRITE_BYTECODE)
    assert (project / "out.txt").read_text() == "10"
    assert list((project / "__pycache__").glob(f"{file[:-3]}.*.pyc")), "bytecode was cached"

    _edit_keeping_stat(project / file, old, new)
    pivot("run", **WRITE_BYTECODE)
    assert (project / "out.txt").read_text() == expected


def test_stale_bytecode_of_the_default_kind_is_not_trusted(
    project: pathlib.Path, pivot: PivotCLI
) -> None:
    """A cache written by plain Python (checked by mtime and size) for the old source."""
    import py_compile

    write_files(project, {"pipeline.py": PIPELINE, "lib.py": "SCALE = 2\n"})
    pivot("run", **WRITE_BYTECODE)
    lib = project / "lib.py"
    cached = next((project / "__pycache__").glob("lib.*.pyc"))
    py_compile.compile(
        str(lib), cfile=str(cached), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP
    )

    _edit_keeping_stat(lib, "SCALE = 2", "SCALE = 4")
    pivot("run", **WRITE_BYTECODE)
    assert (project / "out.txt").read_text() == "20"


def test_damaged_bytecode_is_compiled_again(project: pathlib.Path, pivot: PivotCLI) -> None:
    write_files(project, {"pipeline.py": PIPELINE, "lib.py": "SCALE = 2\n"})
    pivot("run", **WRITE_BYTECODE)
    damaged = sorted((project / "__pycache__").glob("*.pyc"))
    assert len(damaged) == 2
    for cached in damaged:
        cached.write_bytes(cached.read_bytes()[:20] + b"\xff" * 8)  # header kept, code cut
    pivot("run", "--force", **WRITE_BYTECODE)
    assert (project / "out.txt").read_text() == "10"
    assert all(cached.stat().st_size > 28 for cached in damaged), "written again, whole"


def _venv(prefix: pathlib.Path) -> pathlib.Path:
    """A virtual environment at `prefix` seeing this test's packages, holding a package
    `venvpkg` of its own; its Python."""
    import site
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    packages = next((prefix / "lib").glob("python*/site-packages"))
    (packages / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    write_files(packages, {"venvpkg/__init__.py": "", "venvpkg/mod.py": "X = 1\n"})
    return prefix / "bin" / "python"


def _pivot_with(python: pathlib.Path, root: pathlib.Path, *args: str) -> None:
    import subprocess

    env = {**os.environ, "PYTHONPATH": PYTHONPATH, **WRITE_BYTECODE}
    proc = subprocess.run(
        [str(python), "-m", "pivot", *args], cwd=root, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_project_inside_a_python_install_folder_is_still_checked(
    tmp_path: pathlib.Path,
) -> None:
    """A project under the prefix of the Python that runs Pivot (`/usr/src/app` with a
    system Python in `/usr`, `/usr/local/src/app` in a Python image): its modules are the
    project's, loaded by hash."""
    python = _venv(tmp_path / "env")
    root = tmp_path / "env" / "src" / "app"
    root.mkdir(parents=True)
    _pivot_with(python, root, "init")
    write_files(root, {"pipeline.py": PIPELINE, "lib.py": "SCALE = 2\n"})
    _pivot_with(python, root, "run")
    assert (root / "out.txt").read_text() == "10"

    _edit_keeping_stat(root / "lib.py", "SCALE = 2", "SCALE = 3")
    _pivot_with(python, root, "run")
    assert (root / "out.txt").read_text() == "15"


PACKAGE_PIPELINE = """
from typing import Annotated

import pivot
import venvpkg.mod
from lib.sub import SCALE

LOADER = type(venvpkg.mod.__loader__).__name__

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return f"{SCALE} {LOADER}"


pipeline.register(make)
"""


def test_a_package_of_the_project_is_checked_and_its_venv_loads_as_usual(
    tmp_path: pathlib.Path,
) -> None:
    """Pivot run by the project's own `.venv`: a module of a package in the project (its
    submodules found through the package's `__path__`) runs as edited; the virtual
    environment's packages keep Python's own loader."""
    root = tmp_path / "proj"
    python = _venv(root / ".venv")
    _pivot_with(python, root, "init")
    write_files(
        root,
        {"pipeline.py": PACKAGE_PIPELINE, "lib/__init__.py": "", "lib/sub.py": "SCALE = 2\n"},
    )
    _pivot_with(python, root, "run")
    assert (root / "out.txt").read_text() == "2 SourceFileLoader"

    _edit_keeping_stat(root / "lib" / "sub.py", "SCALE = 2", "SCALE = 3")
    _pivot_with(python, root, "run")
    assert (root / "out.txt").read_text() == "3 SourceFileLoader"


def test_bytecode_that_breaks_the_decoder_is_compiled_again(
    project: pathlib.Path, pivot: PivotCLI
) -> None:
    """Its header records the source's hash, but its code makes `marshal` raise something
    other than the usual decode errors (a negative argument count: a `SystemError` on
    CPython 3.11 to 3.13)."""
    write_files(project, {"pipeline.py": PIPELINE, "lib.py": "SCALE = 2\n"})
    pivot("run", **WRITE_BYTECODE)
    cached = next((project / "__pycache__").glob("lib.*.pyc"))
    data = bytearray(cached.read_bytes())
    data[16 + 4] = 0x80  # the high byte of the module code's argument count
    cached.write_bytes(bytes(data))
    pivot("run", "--force", **WRITE_BYTECODE)
    assert (project / "out.txt").read_text() == "10"


def test_a_bytecode_folder_that_cannot_be_written_does_not_fail_a_run(
    project: pathlib.Path, pivot: PivotCLI
) -> None:
    """`__pycache__` a file (as unwritable as a read-only folder, even to root): the
    modules are compiled in memory, run as edited, and nothing is written."""
    write_files(project, {"pipeline.py": PIPELINE, "lib.py": "SCALE = 2\n"})
    (project / "__pycache__").write_text("not a folder")
    pivot("run", **WRITE_BYTECODE)
    assert (project / "out.txt").read_text() == "10"
    _edit_keeping_stat(project / "lib.py", "SCALE = 2", "SCALE = 3")
    pivot("run", **WRITE_BYTECODE)
    assert (project / "out.txt").read_text() == "15"
    assert (project / "__pycache__").read_text() == "not a folder"


def test_a_module_of_a_pythonpath_folder_outside_the_project_is_checked(
    project: pathlib.Path, pivot: PivotCLI, tmp_path: pathlib.Path
) -> None:
    """The user's own code on PYTHONPATH (no install of it) is fingerprinted by its source,
    so it runs, and its constants are read, as edited too."""
    ext = tmp_path / "extlib"
    write_files(ext, {"lib.py": "SCALE = 2\n"})
    env = {**WRITE_BYTECODE, "PYTHONPATH": os.pathsep.join((str(ext), PYTHONPATH))}
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run", **env)
    assert (project / "out.txt").read_text() == "10"
    assert list((ext / "__pycache__").glob("lib.*.pyc")), "bytecode was cached"

    _edit_keeping_stat(ext / "lib.py", "SCALE = 2", "SCALE = 3")
    assert "code changed: const:SCALE" in pivot("status", **env).stdout
    pivot("run", **env)
    assert (project / "out.txt").read_text() == "15"
