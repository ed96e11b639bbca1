"""An output edited in place while its stage's lock still matches: `status` and `run -n`
say what `run` does with it and with every stage that reads it, never `up to date` for a
stage whose dep in the workspace is not the one its lock recorded."""

from __future__ import annotations

import json

from support import COUNTER, executions, rewrite_keeping_mtime, write_files

PIPELINE = (
    """
from typing import Annotated

import pivot
"""
    + COUNTER
    + """
pipeline = pivot.Pipeline("p")


def a() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    _count("a")
    return "AAAA"


def b(x: Annotated[str, pivot.Dep("a.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("b.txt", pivot.loaders.Text())]:
    _count("b")
    return x + "B"


def c(x: Annotated[str, pivot.Dep("b.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("c.txt", pivot.loaders.Text())]:
    _count("c")
    return x + "C"


def d(x: Annotated[str, pivot.Dep("a.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("d.txt", pivot.loaders.Text())]:
    _count("d")
    return x + "D"


pipeline.register(a)
pipeline.register(b)
pipeline.register(c)
pipeline.register(d)
"""
)


def _lines(text: str) -> dict[str, str]:
    """Each stage's status line and its reasons, by stage id."""
    found: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("    ") and "p/" in line:
            current = line.split()[-2] if "pipeline.py" in line else line.split()[-1]
            found[current] = line
        elif current and line.startswith("      "):
            found[current] += "\n" + line
    return found


def test_readers_of_an_edit_that_exists_nowhere_else_wait_and_run_refuses(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    rewrite_keeping_mtime(project / "a.txt", "EDIT")  # same size and mtime: seen by ctime

    status = pivot("status").stdout
    rows = _lines(status)
    assert rows["p/a"].lstrip().startswith("restorable"), status
    assert "output a.txt was modified" in rows["p/a"]
    assert "edits to a.txt exist nowhere else: a run refuses" in rows["p/a"], status
    for reader in ("p/b", "p/d"):
        assert rows[reader].lstrip().startswith("waits"), status
        assert "dep a.txt was edited in the workspace; p/a restores it first" in rows[reader]
    assert rows["p/c"].lstrip().startswith("up to date"), status  # b.txt is as recorded
    assert "4 stages, 3 not up to date." in status

    data = {row["stage"]: row for row in json.loads(pivot("status", "--json").stdout)}
    assert data["p/a"]["action"] == "restore" and data["p/a"]["unsaved_edits"] == ["a.txt"]
    assert data["p/b"]["action"] == data["p/d"]["action"] == "waits"
    assert data["p/b"]["edited_deps"] == ["a.txt"]
    assert data["p/c"]["action"] == "skip"

    plan = {row["stage"]: row for row in json.loads(pivot("run", "-n", "--json").stdout)["plan"]}
    assert [plan[s]["action"] for s in ("p/a", "p/b", "p/c", "p/d")] == [
        "restore",
        "waits",
        "skip",
        "waits",
    ]
    assert "waits          p/b  (dep a.txt was edited" in pivot("run", "-n").stdout

    refused = pivot("run", rc=1)
    assert "edits that exist nowhere else" in refused.stderr
    assert (project / "a.txt").read_text() == "EDIT" and len(executions(project)) == 4

    pivot("run", "--force", "p/b")  # discards the edit; b is forced, d is not
    assert (project / "a.txt").read_text() == "AAAA"
    assert sorted(executions(project)) == sorted("abbcd")
    assert "Every stage is up to date (4 stages)." in pivot("status").stdout


def test_readers_of_an_edit_the_cache_holds_wait_and_run_restores(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("run")
    (project / "a.txt").write_text("AAAAB")  # b.txt's content: in the cache, not lost

    rows = _lines(status := pivot("status").stdout)
    assert rows["p/a"].lstrip().startswith("restorable"), status
    assert "nowhere else" not in status
    assert rows["p/b"].lstrip().startswith("waits") and rows["p/d"].lstrip().startswith("waits")

    proc = pivot("run")
    assert "restored" in proc.stdout and "1 restored" in proc.stdout, proc.stdout
    assert (project / "a.txt").read_text() == "AAAA"
    assert sorted(executions(project)) == list("abcd")  # the readers were up to date once restored
    assert "Every stage is up to date (4 stages)." in pivot("status").stdout
