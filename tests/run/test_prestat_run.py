"""`pivot run` with an output folder large enough for `cache.prestat` to stat it ahead of
the plan (a helper started before the imports): a no-op is "up to date", a same-size
rewrite with its mtime put back in the part the helper stat-ed is noticed, and once undone
the stage is up to date again."""

from __future__ import annotations

import os
import time

from support import executions, write_files

from pivot.cache import prestat
from pivot.cache.snapshot import RACY_NS

FILES = prestat.MIN_FILES  # the fewest files a helper is started for

PIPELINE = """
import pathlib
from typing import Annotated

import pivot
from pivot.define.loaders import PathOnly

VERSION = "{version}"
pipeline = pivot.Pipeline("p")

def make() -> Annotated[pathlib.Path, pivot.Out("data", PathOnly())]:
    with open("executions.log", "a") as log:
        log.write("make\\n")
    folder = pathlib.Path("data")
    folder.mkdir(exist_ok=True)
    for k in range({files}):
        (folder / f"f{{k:05d}}.txt").write_text(f"{{VERSION}} {{k}}\\n")
    return folder

def report(
    data: Annotated[pathlib.Path, pivot.Dep("data", PathOnly())],
) -> Annotated[pathlib.Path, pivot.Out("report.txt", PathOnly())]:
    with open("executions.log", "a") as log:
        log.write("report\\n")
    names = sorted(os.listdir(data))
    first, last = (open(os.path.join(data, n)).read() for n in (names[0], names[-1]))
    pathlib.Path("report.txt").write_text(f"{{len(names)}} {{first.split()[0]}} {{last.split()[0]}}\\n")
    return pathlib.Path("report.txt")

import os
pipeline.register(make)
pipeline.register(report)
"""


def _pipeline(version: str) -> dict[str, str]:
    return {"pipeline.py": PIPELINE.format(version=version, files=FILES)}


def test_run_with_a_folder_stat_ed_ahead(project, pivot) -> None:
    write_files(project, _pipeline("one"))
    pivot("run")
    assert (project / "report.txt").read_text() == f"{FILES} one one\n"
    time.sleep(RACY_NS / 1e9 + 0.2)  # old enough for the no-op to store the folder's snapshot
    assert "up to date" in pivot("run").stdout
    assert "up to date" in pivot("run").stdout  # this one had a helper (a snapshot was stored)

    # The last entry the folder lists is the first one the helper stats.
    target = project / "data" / os.listdir(project / "data")[-1]
    before = target.stat()
    text = target.read_text()
    target.write_text(text.replace("one", "ONE"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size
    proc = pivot("run", rc=1)
    assert f"data/{target.name}. Nothing was replaced." in proc.stderr
    target.write_text(text)  # the edit undone: the content is the recorded one again
    assert "up to date" in pivot("run").stdout
    assert executions(project) == ["make", "report"]
