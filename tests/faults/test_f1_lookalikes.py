"""Names that Windows or macOS open as `.git` or `.pivot` are refused like those: trailing
dots and spaces (stripped by Windows), an NTFS stream suffix, the 8.3 short name
(`GIT~1`), and code points HFS+ ignores (`.g\\u200cit`)."""

from __future__ import annotations

import pytest
from paths_support import HOOK, cache_file, git_init, write_lock


@pytest.mark.parametrize(
    "path",
    [
        ".git./hooks/pre-commit",
        ".git /hooks/pre-commit",
        ".git::$INDEX_ALLOCATION/hooks/pre-commit",
        "GIT~1/hooks/pre-commit",
        "sub/git~2/config",
        ".g\u200cit/hooks/pre-commit",
        "\ufeff.GIT/config",
        ".pivot./config.local.yaml",
        "PIVOT~1/config.local.yaml",
        ".piv\u200dot/config.local.yaml",
    ],
)
def test_pull_all_refuses_a_look_alike_of_git_or_pivot(project, pivot, tmp_path, path):
    git_init(project)
    pivot("remote", "add", "origin", str(tmp_path / "remote"), "--default")
    write_lock(project, "p/s", {path: cache_file(project, HOOK)})
    proc = pivot("pull", "--all", rc=None)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert repr(path) in proc.stderr and "compared as macOS and Windows" in proc.stderr
    assert sorted(p.name for p in project.iterdir()) == [".git", ".pivot"]
