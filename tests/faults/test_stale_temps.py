"""What the command lock's sweep removes: the cache temps in `tmp/` and the hidden atomic-
write temps (`.NAME.XXXX.tmp`) among the lock files, run records and tracked-data records,
at any depth; nothing else, and nothing through a linked folder."""

from __future__ import annotations

import os
import pathlib

from pivot.project import Project


def test_the_sweep_removes_every_temp_at_any_depth_and_nothing_through_a_link(
    project: pathlib.Path, tmp_path: pathlib.Path
):
    pivot_dir = project / ".pivot"
    outside = tmp_path / "outside"
    (outside / "p").mkdir(parents=True)
    theirs = [outside / ".a.lock.x1.tmp", outside / "p" / ".b.lock.x2.tmp"]
    temps = [
        pivot_dir / "tmp" / "blob.0123abcd",
        pivot_dir / "stages" / "p" / ".s0.lock.k3j2h1x9.tmp",
        pivot_dir / "stages" / "p" / "deep" / "er" / ".s1.lock.a_b7c8d9.tmp",
        pivot_dir / "cache" / "runs" / "ab" / ".abab.q1w2e3r4.tmp",
        pivot_dir / "tracked" / "data" / ".raw.csv.json.z9y8x7w6.tmp",
    ]
    kept = [
        pivot_dir / "stages" / "p" / "s0.lock",
        pivot_dir / "stages" / "p" / "notes.tmp",  # not hidden: not an atomic write's temp
        pivot_dir / "stages" / "p" / ".hidden.txt",
        pivot_dir / "cache" / "runs" / "ab" / "abab",
    ]
    for path in [*theirs, *temps, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    folder_temp = pivot_dir / "tmp" / "blob.folder"  # a tree being assembled
    (folder_temp / "sub").mkdir(parents=True)
    (folder_temp / "sub" / "f").write_text("x")
    os.symlink(outside, pivot_dir / "stages" / "linked")
    os.symlink(outside / ".a.lock.x1.tmp", pivot_dir / "stages" / "p" / ".link.lock.x3.tmp")

    found = Project.discover(project).stale_temps()
    link_temp = pivot_dir / "stages" / "p" / ".link.lock.x3.tmp"
    assert found == sorted([*temps, folder_temp, link_temp])

    with Project.discover(project).exclusive("test"):
        pass
    assert [p for p in [*temps, folder_temp] if p.exists()] == []
    assert not os.path.lexists(link_temp)  # the link itself, not what it points to
    assert all(p.read_text() == "x" for p in [*theirs, *kept])
