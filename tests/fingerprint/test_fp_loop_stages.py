"""Names of the module beside locals of the same name: a fingerprint holds only the values a
stage's code really reaches (a module-level loop variable `i` is not a factory's `i`)."""

from __future__ import annotations

import textwrap

from fp_support import changed, load, write

from pivot import fingerprint as fp


def test_enclosing_local_in_a_nested_header_is_not_the_global(root) -> None:
    source = """\
        def make(i):
            def stage(x) -> f"{i}":
                return x
            return stage

        STAGES = [make(i) for i in range(2)]
        for i in range(COUNT):
            last = make(i)
        """
    write(root, "pipeline.py", "COUNT = 2\n" + textwrap.dedent(source))
    two = fp.fingerprint(load(root).STAGES[0], root)
    assert set(two) == {"func:make.<locals>.stage"}
    write(root, "pipeline.py", "COUNT = 5\n" + textwrap.dedent(source))
    assert changed(two, fp.fingerprint(load(root).STAGES[0], root)) == set()


def test_local_beside_an_attribute_of_that_name_is_not_the_global(root) -> None:
    source = """\
        class Row:
            i = 1

        ROW = Row()

        def stage():
            total = 0
            for i in range(3):
                total += ROW.i + i
            return total

        for i in range(COUNT):
            pass
        """
    write(root, "pipeline.py", "COUNT = 2\n" + textwrap.dedent(source))
    before = fp.fingerprint(load(root).stage, root)
    assert "const:i" not in before
    write(root, "pipeline.py", "COUNT = 5\n" + textwrap.dedent(source))
    assert changed(before, fp.fingerprint(load(root).stage, root)) == set()


def test_a_global_read_beside_a_local_of_that_name_still_counts(root) -> None:
    source = """\
        def stage():
            def inner():
                i = 0
                return i
            return inner() + i
        """
    write(root, "pipeline.py", "i = 1\n" + textwrap.dedent(source))
    before = fp.fingerprint(load(root).stage, root)
    write(root, "pipeline.py", "i = 2\n" + textwrap.dedent(source))
    assert changed(before, fp.fingerprint(load(root).stage, root)) == {"const:i"}
