"""`safe_relpath`'s shortcuts (common paths, and paths it accepted before in the process)
accept exactly what its full checks accept: for any string, asked once or again, both
accept it or both refuse it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pivot.errors import PivotError
from pivot.project import checked_relpath, safe_relpath

# Parts near the shortcut's edges: its own characters, and names it must leave to the
# full checks (the Python folders in any case, dotted names, '~', ':', spaces).
PARTS = st.one_of(
    st.text(alphabet="aZ09_-.~: ", max_size=6),
    st.sampled_from(
        [
            *("site-packages", "Site-Packages.", "__pycache__", "__PYCACHE__..", "PyVenv.cfg"),
            *("dist-packages", ".git", "git~1", ".pivot", "..", ".", "", "data", "f00001.txt"),
        ]
    ),
    st.text(max_size=4),
)


def _verdict(check, rel: str) -> bool:
    try:
        check(rel, "a fuzzed path")
    except PivotError:
        return False
    return True


@settings(max_examples=500)
@given(st.lists(PARTS, min_size=1, max_size=4).map("/".join))
def test_the_shortcut_agrees_with_the_full_checks(rel: str) -> None:
    full = _verdict(checked_relpath, rel)
    assert _verdict(safe_relpath, rel) == full
    assert _verdict(safe_relpath, rel) == full  # asked again: remembered only if accepted
