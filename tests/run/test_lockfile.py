"""Lock files called directly: the exact text written (it is reviewed in diffs), the
round trip, what an unusable file says, and what all of a project's locks keep alive."""

from __future__ import annotations

import pathlib

import pytest

from pivot.errors import PivotError
from pivot.project import Project
from pivot.run.lockfile import Lock, live, load_locks, parse_lock, read_lock, write_lock

A = "a" * 64
B = "b" * 64
K = "c" * 64


def _lock(stage_id: str = "p/s", **outs) -> Lock:
    return Lock(
        stage_id=stage_id,
        run_key=K,
        fingerprint={"func:s": "1" * 8},
        params={"limit": 3, "name": "été"},
        deps={"raw.txt": B},
        outs=outs or {"out.txt": {"hash": A, "size": 5, "kind": "file"}},
    )


def test_the_text_is_deterministic_sorted_json_with_a_trailing_newline(tmp_path):
    write_lock(tmp_path, _lock())
    text = (tmp_path / "p" / "s.lock").read_text()
    assert text == (
        "{\n"
        '  "deps": {\n'
        f'    "raw.txt": "{B}"\n'
        "  },\n"
        '  "fingerprint": {\n'
        '    "func:s": "11111111"\n'
        "  },\n"
        '  "outs": {\n'
        '    "out.txt": {\n'
        f'      "hash": "{A}",\n'
        '      "kind": "file",\n'
        '      "size": 5\n'
        "    }\n"
        "  },\n"
        '  "params": {\n'
        '    "limit": 3,\n'
        '    "name": "été"\n'
        "  },\n"
        f'  "run_key": "{K}",\n'
        '  "schema": 1,\n'
        '  "stage": "p/s"\n'
        "}\n"
    )
    assert read_lock(tmp_path, "p/s") == _lock()
    assert read_lock(tmp_path, "p/absent") is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "is unreadable"),
        ('{"schema": 9}', "unknown schema 9"),
        ('{"schema": 1, "stage": "p/s", "run_key": "x"}', "is unreadable"),
    ],
)
def test_an_unusable_lock_file_is_named(text, says):
    where = pathlib.Path("/proj/.pivot/stages/p/s.lock")
    with pytest.raises(PivotError) as caught:
        parse_lock(text, where)
    assert str(where) in str(caught.value) and says in str(caught.value)


def test_load_locks_reads_every_lock_and_live_names_what_they_keep(tmp_path):
    project = Project(tmp_path)
    write_lock(project.stages_dir, _lock("p/one"))
    write_lock(project.stages_dir, _lock("q/two", **{"d": {"hash": B, "size": 9, "kind": "dir"}}))
    locks = load_locks(project)
    assert [lock.stage_id for lock in locks] == ["p/one", "q/two"]
    assert live(locks) == ({K}, [(A, "file"), (B, "dir")])

    (project.stages_dir / "q" / "two.lock").write_text("{")
    with pytest.raises(PivotError) as caught:
        load_locks(project)
    assert str(project.stages_dir / "q" / "two.lock") in str(caught.value)
