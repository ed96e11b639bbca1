"""A declared path's project path, taken by the shortcut for plain paths when stages are
loaded, is the one `Project.rel` gives (or both refuse it), whatever the path."""

from __future__ import annotations

import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

from pivot.discover.loading import DeclaredPaths
from pivot.errors import PivotError
from pivot.project import Project

ROOT = pathlib.Path("/proj")
PARTS = st.one_of(
    st.text(alphabet="aZ09_-.~* ", max_size=5),
    st.sampled_from(["..", ".", "", "data", "x.", "a..b", "-x", "_"]),
)


def _verdict(func, declared: str) -> str:
    try:
        return func(declared)
    except PivotError:
        return "refused"


@settings(max_examples=400)
@given(
    st.sampled_from(["", "p", "p/q", "a.b/c-d"]),
    st.lists(PARTS, min_size=1, max_size=4).map("/".join),
)
def test_the_shortcut_gives_what_project_rel_gives(folder: str, declared: str) -> None:
    project = Project(ROOT)
    directory = ROOT / folder if folder else ROOT
    file_rel = f"{folder}/pipeline.py" if folder else "pipeline.py"
    paths = DeclaredPaths(project, directory, f"{folder}/" if folder else "", file_rel)
    expected = _verdict(lambda d: project.rel(d, base=directory), declared)
    assert _verdict(paths.rel, declared) == expected
