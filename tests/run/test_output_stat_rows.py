"""The stage's child hands the stat-cache rows of the files it stored to the scheduler:
after a run, every output file (in a directory or alone) that changed before the racy
marker made once the stage returned has a row with its current stat and its hash, so the
next command hashes none of them again (a file of the marker's own tick is smudged:
`tests/cache/test_stat_racy.py`)."""

from __future__ import annotations

from support import write_files
from test_dir_output_rewrite import PIPELINE

from pivot.cache.hashing import hash_bytes
from pivot.cache.state import StateDB

PIPELINE_WITH_FILE = (
    PIPELINE
    + """
import time

def single() -> Annotated[pathlib.Path, pivot.Out("one.txt", PathOnly())]:
    pathlib.Path("one.txt").write_text("alone\\n")
    time.sleep(0.05)  # past the clock's tick: settled under the marker made after this
    return pathlib.Path("one.txt")

pipeline.register(single)
"""
)


def test_a_run_records_every_output_file_in_the_stat_cache(project, pivot) -> None:
    write_files(project, {"pipeline.py": PIPELINE_WITH_FILE})
    pivot("run")
    state = StateDB(project / ".pivot" / "state.db")
    try:
        files = [p for p in (project / "data").rglob("*") if p.is_file()]
        files.append(project / "one.txt")
        assert len(files) == 4
        for path in files:
            rel = path.relative_to(project).as_posix()
            assert state.lookup(rel, path.stat()) == hash_bytes(path.read_bytes()), rel
    finally:
        state.close()
