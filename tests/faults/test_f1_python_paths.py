"""A crafted lock file never writes where Python runs code without being asked: into a
virtual environment (a folder holding `pyvenv.cfg`), a `site-packages` or
`dist-packages` folder (a `.pth` file there runs with every `python`), or a
`__pycache__` folder (a compiled module there can run instead of the reviewed source).
"""

from __future__ import annotations

import pytest
from paths_support import assert_refused, cache_file, cache_tree, git_init, snapshot, write_lock
from support import declare_stage

PTH = b"import os; os.system('echo pwned')\n"


def make_venv(project, name: str = ".venv") -> None:
    venv = project / name
    (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")


def pull_crafted(project, pivot, tmp_path, outs: dict):
    git_init(project)
    (tmp_path / "remote").mkdir(exist_ok=True)  # an empty remote (a missing folder is an error)
    pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    outs = {**outs, "fine.txt": cache_file(project, b"fine\n")}
    write_lock(project, "p/s", outs)
    declare_stage(project, "p/s", list(outs))  # a stage declares them: the lock is used
    return pivot("pull", "--all", rc=None)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        (".venv/lib/python3.11/site-packages/evil.pth", "site-packages"),
        ("env/lib/python3/dist-packages/evil.pth", "dist-packages"),  # no pyvenv.cfg (conda)
        ("src/__pycache__/helpers.cpython-311.pyc", "__pycache__"),
        ("tools/pyvenv.cfg", "pyvenv.cfg"),
        (".venv/bin/python", "virtual environment"),
        (".venv/lib/python3.11/evil.py", "virtual environment"),
    ],
)
def test_pull_all_refuses_a_python_path(project, pivot, tmp_path, path, needle):
    make_venv(project)
    before = snapshot(project / ".venv")
    proc = pull_crafted(project, pivot, tmp_path, {path: cache_file(project, PTH)})
    assert_refused(proc, repr(path), needle)
    assert snapshot(project / ".venv") == before
    assert not (project / path).exists() or path == ".venv/bin/python"
    assert not (project / "fine.txt").exists()  # refused before anything was placed


def test_a_tree_output_replacing_a_venv_is_refused(project, pivot, tmp_path):
    make_venv(project)
    before = snapshot(project / ".venv")
    tree = cache_tree(project, {"bin/python": (b"#!/bin/sh\necho pwned\n", 0o755)})
    proc = pull_crafted(project, pivot, tmp_path, {".venv": tree})
    assert_refused(proc, "'.venv'", "virtual environment", "pyvenv.cfg")
    assert snapshot(project / ".venv") == before


def test_a_tree_entry_in_site_packages_is_refused(project, pivot, tmp_path):
    tree = cache_tree(project, {"lib/site-packages/evil.pth": (PTH, 0o644)})
    proc = pull_crafted(project, pivot, tmp_path, {"env": tree})
    assert_refused(proc, "'lib/site-packages/evil.pth'", "site-packages")
    assert not (project / "env").exists()
