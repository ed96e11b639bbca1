"""Source indexes: what the normalised AST ignores and what counts, and the disk cache."""

from __future__ import annotations

import time

from fp_support import HELPERS, changed, load, parts_of, write
from support import rewrite_keeping_mtime

from pivot import fingerprint as fp
from pivot.fingerprint import source_index

TICK = 0.05  # longer than any coarse file-system clock tick of Linux (1-10 ms)


def test_comments_docstrings_and_formatting_do_not_count(project):
    before = parts_of(project)
    write(
        project,
        "pipeline.py",
        """\
        # A comment at the top.
        import helpers
        from helpers import clean

        THRESHOLD = 3



        def stage(rows):  # the stage
            \"\"\"A different docstring.\"\"\"

            def inner():
                \"\"\"Nested docstrings do not count either.\"\"\"

            kept = [
                clean(r)   for r in rows
                if len(r) > THRESHOLD  # long ones
            ]
            return helpers.count(kept)


        def unrelated():
            return 1
        """,
    )
    after = parts_of(project)
    # Adding the nested def is a real change; remove it and the digest must be equal.
    assert changed(before, after) == {"func:stage"}
    write(
        project,
        "pipeline.py",
        """\
        # A comment at the top.
        import helpers
        from helpers import clean

        THRESHOLD = 3



        def stage(rows):  # the stage
            \"\"\"A different docstring.\"\"\"
            kept = [
                clean(r)   for r in rows
                if len(r) > THRESHOLD  # long ones
            ]
            return helpers.count(kept)
        """,
    )
    assert fp.fingerprint_digest(parts_of(project)) == fp.fingerprint_digest(before)


def test_decorator_change_counts(root):
    write(
        root,
        "pipeline.py",
        """\
        import functools

        @functools.lru_cache(maxsize=1)
        def stage():
            return 1
        """,
    )
    before = parts_of(root)
    write(root, "pipeline.py", (root / "pipeline.py").read_text().replace("=1", "=2"))
    assert changed(before, parts_of(root)) == {"func:stage"}


def test_renaming_the_function_keeps_its_hash(root):
    write(root, "pipeline.py", "def stage(x):\n    return x + 1\n")
    before = parts_of(root)
    write(root, "pipeline.py", "def renamed(x):\n    return x + 1\n")
    assert parts_of(root, "renamed") == {"func:renamed": before["func:stage"]}


def test_disk_index_makes_a_new_process_skip_parsing(project, monkeypatch):
    (project / ".pivot").mkdir()
    before = parts_of(project)
    stored = list((project / ".pivot" / "tmp" / "fingerprint").iterdir())
    assert len(stored) == 2  # pipeline.py and helpers.py

    def no_parse(source):
        raise AssertionError("parsed although the disk index is current")

    monkeypatch.setattr(source_index, "parse", no_parse)
    assert parts_of(project) == before  # parts_of clears the in-memory caches first
    monkeypatch.undo()
    write(project, "helpers.py", HELPERS.replace("row.strip()", "row"))
    assert changed(before, parts_of(project)) == {"func:helpers.clean"}


def test_corrupt_disk_index_is_ignored(project):
    (project / ".pivot").mkdir()
    before = parts_of(project)
    for path in (project / ".pivot" / "tmp" / "fingerprint").iterdir():
        path.write_bytes(b"\x00garbage")
    assert parts_of(project) == before


def test_disk_index_covers_local_imports(local_project, monkeypatch):
    (local_project / ".pivot").mkdir()
    write(local_project, "pipeline.py", "def stage():\n    import rows\n    return rows.make()\n")
    before = parts_of(local_project)
    assert "func:lib.maths.double" in before

    def no_parse(source):
        raise AssertionError("parsed although the disk index is current")

    monkeypatch.setattr(source_index, "parse", no_parse)
    assert parts_of(local_project) == before


def test_source_unavailable_falls_back_to_bytecode(root):
    namespace: dict = {}
    exec(compile("def stage(x):\n    return x + 1\n", "<generated>", "exec"), namespace)
    parts = fp.fingerprint(namespace["stage"], root)
    assert set(parts) == {"func:stage"}
    exec(compile("def stage(x):\n    return x + 2\n", "<generated>", "exec"), namespace)
    assert fp.fingerprint(namespace["stage"], root) != parts


def test_a_file_checked_once_per_plan_is_checked_again_at_the_next(root):
    """`checked_once` (a plan) checks each file's index once; a later plan sees an edit
    made since, in the same process (as `run --watch` plans again)."""
    write(root, "pipeline.py", "def stage(x):\n    return x + 1\n")
    with fp.checked_once():
        before = fp.fingerprint(load(root, fresh=False).stage, root)
        with fp.checked_once():  # nested: one block
            assert fp.fingerprint(load(root, fresh=False).stage, root) == before
    write(root, "pipeline.py", "def stage(x):\n    return x + 22\n")  # another size
    with fp.checked_once():
        after = fp.fingerprint(load(root, fresh=False).stage, root)
    assert changed(before, after) == {"func:stage"}


def test_a_same_size_rewrite_keeping_mtime_is_seen_in_the_same_process(project):
    """The in-memory index is keyed by size, mtime, ctime and inode: a helper rewritten in
    place with its size and mtime kept (`tar -x`, `cp -p`, a tool restoring mtimes) is
    parsed again by a process that indexed it before (as `run --watch` plans again)."""
    (project / ".pivot" / "tmp").mkdir(parents=True)
    time.sleep(TICK)  # the helper changed before the racy marker: its key is trusted
    with fp.checked_once():
        before = fp.fingerprint(load(project, fresh=False).stage, project)
    assert source_index.FILES[str(project / "helpers.py")].key is not None  # memoised
    rewrite_keeping_mtime(project / "helpers.py", HELPERS.replace("strip", "lower"))
    with fp.checked_once():
        after = fp.fingerprint(load(project, fresh=False).stage, project)
    assert changed(before, after) == {"func:helpers.clean"}


def test_an_index_read_within_a_tick_of_its_change_is_not_memoised(project):
    """A file changed after the racy marker (`pivot._racy`) could change again within the
    same clock tick keeping its stat key: its index is checked against the content at every
    plan, and a rewrite that keeps its size, mtime and ctime is still seen."""
    (project / ".pivot" / "tmp").mkdir(parents=True)
    fp.clear_cache()
    with fp.checked_once():
        before = fp.fingerprint(load(project, fresh=False).stage, project)
    write(project, "helpers.py", HELPERS.replace("strip", "lower"))  # after the marker
    with fp.checked_once():
        after = fp.fingerprint(load(project, fresh=False).stage, project)
    assert changed(before, after) == {"func:helpers.clean"}
    assert source_index.FILES[str(project / "helpers.py")].key is None  # not trusted
