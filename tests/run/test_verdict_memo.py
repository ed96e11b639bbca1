"""The verdict memo (`run.verdict_memo`): the real CLI on real files. A no-op run after a
no-op run is replayed from the memo (the memo file is left as it was) and prints what the
full no-op prints; every input the verdict rests on, changed, makes the next run do the
full work and reach the right outcome; a memo that is damaged, of another format or of
another project is ignored. The decoder is fuzzed."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import COUNTER, executions, rewrite_keeping_mtime, verdict_memo_key, write_files

from pivot.run import verdict_memo

PIPELINE = (
    """
import pathlib
from typing import Annotated

import pivot
import helper
"""
    + COUNTER
    + """
pipeline = pivot.Pipeline("p")
LIMIT = pathlib.Path("limit.txt").read_text().strip()  # read at import


def make(
    src: Annotated[str, pivot.Dep("in.txt", pivot.loaders.Text())],
) -> Annotated[str, pivot.Out("made.txt", pivot.loaders.Text())]:
    _count("make")
    return src + LIMIT + helper.suffix()


def tree(
    made: Annotated[str, pivot.Dep("made.txt", pivot.loaders.Text())],
    params: dict,
) -> Annotated[pathlib.Path, pivot.Out("tree", pivot.loaders.PathOnly())]:
    _count("tree")
    out = pathlib.Path("tree")
    (out / "sub").mkdir(parents=True, exist_ok=True)
    (out / "sub" / "a.txt").write_text(made)
    (out / "b.txt").write_text("b")
    return out


pipeline.register(make)
pipeline.register(tree, params={"title": "v1"})
"""
)
FILES = {
    "pipeline.py": PIPELINE,
    "helper.py": "def suffix():\n    return '-h'\n",
    "in.txt": "data",
    "limit.txt": "3",
}


def _settled(pivot, project: pathlib.Path, *args: str, cwd: str | None = None) -> None:
    """Run until the memo is written, then check that the next no-op is replayed from it
    (the memo file untouched) and prints what a no-op prints."""
    pivot("run", *args, cwd=cwd)
    out = pivot("run", *args, cwd=cwd).stdout
    assert "Every stage is up to date" in out
    before = verdict_memo_key(project)
    assert before is not None, "a no-op run wrote no verdict memo"
    replayed = pivot("run", *args, cwd=cwd).stdout
    assert verdict_memo_key(project) == before, "the no-op was not replayed from the memo"
    assert _without_time(replayed) == _without_time(out)


def _without_time(text: str) -> str:
    return re.sub(r"\d+\.\d\ds", "T", text)


def _project(project: pathlib.Path, pivot) -> None:
    write_files(project, FILES)
    pivot("run")
    assert executions(project) == ["make", "tree"]
    _settled(pivot, project)
    (project / "executions.log").unlink()


def _ran(project: pathlib.Path) -> list[str]:
    return executions(project)


def test_replayed_no_op_prints_what_the_full_no_op_prints(project, pivot):
    _project(project, pivot)
    full = pivot("run", "--json", "-j", "2").stdout  # another command: the full no-op
    pivot("run", "--json", "-j", "2")
    before = verdict_memo_key(project)
    replayed = pivot("run", "--json", "-j", "2").stdout
    assert verdict_memo_key(project) == before
    strip = lambda text: {**json.loads(text), "seconds": 0}  # noqa: E731
    assert strip(replayed) == strip(full)
    assert json.loads(replayed)["counts"]["up_to_date"] == 2
    assert _ran(project) == []


def test_same_size_rewrite_of_a_dep_keeping_mtime_runs_again(project, pivot):
    _project(project, pivot)
    rewrite_keeping_mtime(project / "in.txt", "DATA")
    pivot("run")
    assert _ran(project) == ["make", "tree"]
    assert (project / "made.txt").read_text() == "DATA3-h"


def test_an_edited_lock_file_is_seen(project, pivot):
    _project(project, pivot)
    lock = project / ".pivot" / "stages" / "p" / "make.lock"
    data = json.loads(lock.read_text())
    data["run_key"] = "0" * 64
    lock.write_text(json.dumps(data))
    out = pivot("run").stdout
    assert "Every stage is up to date" not in out


def test_a_deleted_output_is_restored(project, pivot):
    _project(project, pivot)
    (project / "made.txt").unlink()
    out = pivot("run").stdout
    assert "restored" in out
    assert (project / "made.txt").read_text() == "data3-h"


def test_a_file_edited_inside_a_folder_output_is_seen(project, pivot):
    _project(project, pivot)
    rewrite_keeping_mtime(project / "tree" / "sub" / "a.txt", "X")
    err = pivot("run", rc=1).stderr  # the full run's answer: an edit stored nowhere else
    assert "Refusing to overwrite" in err and "tree/sub/a.txt" in err
    pivot("run", "--force")
    assert (project / "tree" / "sub" / "a.txt").read_text() == "data3-h"


def test_a_new_pipeline_in_a_new_folder_runs_with_all(project, pivot):
    write_files(project, FILES)
    _settled(pivot, project, "--all")
    write_files(
        project,
        {
            "q/pipeline.py": """
            from typing import Annotated
            import pivot
            pipeline = pivot.Pipeline("q")
            def new() -> Annotated[str, pivot.Out("new.txt", pivot.loaders.Text())]:
                return "n"
            pipeline.register(new)
            """
        },
    )
    out = pivot("run", "--all").stdout
    assert "q/new" in out and (project / "q" / "new.txt").read_text() == "n"


def test_an_edited_helper_module_runs_again(project, pivot):
    _project(project, pivot)
    (project / "helper.py").write_text("def suffix():\n    return '-H'\n")
    pivot("run")
    assert _ran(project) == ["make", "tree"]
    assert (project / "made.txt").read_text() == "data3-H"


def test_a_constant_read_from_a_file_at_import_runs_again(project, pivot):
    _project(project, pivot)
    (project / "limit.txt").write_text("4")
    pivot("run")
    assert _ran(project) == ["make", "tree"]
    assert (project / "made.txt").read_text() == "data4-h"


def test_a_constant_read_from_the_environment_at_import_runs_again(project, pivot):
    text = PIPELINE.replace(
        'LIMIT = pathlib.Path("limit.txt").read_text().strip()',
        'import os\nLIMIT = os.environ.get("VERDICT_LIMIT", "3")',
    )
    write_files(project, {**FILES, "pipeline.py": text})
    pivot("run")
    _settled(pivot, project)
    pivot("run", VERDICT_LIMIT="5")
    assert (project / "made.txt").read_text() == "data5-h"


def test_a_new_module_shadowing_an_imported_helper_runs_again(project, pivot):
    files = {f"p/{name}": text for name, text in FILES.items() if name != "helper.py"}
    files["helper.py"] = FILES["helper.py"]  # at the root: found after the pipeline's folder
    write_files(project, files)
    pivot("run", cwd="p")
    _settled(pivot, project, cwd="p")
    (project / "p" / "helper.py").write_text("def suffix():\n    return '-shadow'\n")
    pivot("run", cwd="p")
    assert (project / "p" / "made.txt").read_text() == "data3-shadow"


def test_changed_params_run_again(project, pivot):
    _project(project, pivot)
    text = (project / "pipeline.py").read_text().replace('"v1"', '"v2"')
    (project / "pipeline.py").write_text(text)
    pivot("run")
    assert _ran(project) == ["tree"]


def test_other_jobs_or_targets_are_not_replayed(project, pivot):
    _project(project, pivot)
    for args in (("-j", "3"), ("p/make",)):
        before = verdict_memo_key(project)
        out = pivot("run", *args).stdout
        assert "Every stage is up to date" in out
        assert verdict_memo_key(project) != before, (
            f"{args} was replayed from another command's memo"
        )
    assert _ran(project) == []


def test_a_damaged_foreign_or_old_memo_is_ignored(project, pivot, tmp_path):
    _project(project, pivot)
    memo = project / ".pivot" / "tmp" / verdict_memo.NAME
    good = memo.read_bytes()
    row = msgpack.unpackb(good)
    old = msgpack.packb(["pivot-verdict-memo-0", *row[1:]])
    for n, data in enumerate((good[: len(good) // 2], b"garbage", old, b"")):
        memo.write_bytes(data)
        (project / "in.txt").write_text(f"other{n}")  # a change the memo would hide
        pivot("run")
        assert _ran(project) == ["make", "tree"], data[:20]
        (project / "executions.log").unlink()
        pivot("run")  # the no-op that writes the memo again
    # A copy of the project (its memo with it): the copy's memo is not its own.
    pivot("run")
    pivot("run")
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    (copy / "in.txt").write_text("copied")
    os.utime(copy / "in.txt", ns=(0, (project / "in.txt").stat().st_mtime_ns))
    pivot("run", cwd=copy)
    assert (copy / "made.txt").read_text() == "copied3-h"


def test_checkout_and_track_are_seen(project, pivot):
    _project(project, pivot)
    (project / "made.txt").unlink()
    pivot("checkout")
    before = verdict_memo_key(project)
    assert "Every stage is up to date" in pivot("run").stdout
    assert verdict_memo_key(project) != before  # the output placed again: not replayed
    pivot("run")
    (project / "raw.txt").write_text("raw")
    pivot("track", "raw.txt")
    before = verdict_memo_key(project)
    pivot("run")
    assert verdict_memo_key(project) != before  # a new tracked-data record: not replayed
    assert _ran(project) == []


def test_a_run_that_executes_removes_the_memo_first(project, pivot):
    _project(project, pivot)
    text = (project / "pipeline.py").read_text()
    text = text.replace('_count("make")', '_count("make")\n    raise SystemExit(3)')
    (project / "pipeline.py").write_text(text)
    pivot("run", rc=1)
    assert verdict_memo_key(project) is None


def _valid_memo() -> bytes:
    return msgpack.packb(
        [
            verdict_memo.FORMAT,
            [1, 2],
            "a" * 64,
            ["/x", "/y"],
            b"\0\1",
            [1, 2, 3, 4, 5, -1, -1, -1, -1, -1],
            [[["out", "b" * 64]], ["/m.py"], ["c" * 64, "d" * 64, ["p/make"], False, "lines"]],
        ]
    )


def test_the_decoder_takes_exactly_its_shape():
    memo = verdict_memo.decode(_valid_memo(), [1, 2])
    assert memo is not None and memo.paths == ["/x", "/y"] and memo.dirs == [("out", "b" * 64)]
    assert memo.replay == ("c" * 64, "d" * 64, ("p/make",), False, "lines")
    assert verdict_memo.decode(_valid_memo(), [1, 3]) is None  # another project
    row = msgpack.unpackb(_valid_memo())
    for i, bad in [
        (2, "A" * 64),
        (3, ["x", "/y"]),
        (4, b"\0\2"),
        (5, [1, 2, 3, 4, 5, -1, -1, -1, -1]),
        (5, [1, 2, 3, 4, 5, -1, -1, -1, -1, 2**63]),
        (6, [[["../out", "b" * 64]], ["/m.py"], []]),
        (6, [[["out", "b" * 64]], [3], []]),
        (6, [[["out", "b" * 64]], ["/m.py"]]),  # the first format's shape
        (6, [[], [], ["c" * 64, "d" * 64, ["p/make"], False, "table"]]),  # an unknown view
        (6, [[], [], ["c" * 64, "D" * 64, ["p/make"], False, "lines"]]),
        (6, [[], [], ["c" * 64, "d" * 64, ["p/\0"], False, "lines"]]),
        (6, [[], [], ["c" * 64, "d" * 64, "p/make", False, "lines"]]),
        (6, [[], [], ["c" * 64, "d" * 64, [], 0, "lines"]]),
        (6, [[], [], ["c" * 64, "d" * 64, [], False]]),
    ]:
        changed = list(row)
        changed[i] = bad
        assert verdict_memo.decode(msgpack.packb(changed), [1, 2]) is None, (i, bad)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(0, 400))
def test_fuzzed_memos_decode_to_none_or_a_memo_and_never_raise(junk, cut):
    good = _valid_memo()
    for data in (junk, good[:cut] + junk, good[: min(cut, len(good))]):
        memo = verdict_memo.decode(data, [1, 2])
        assert memo is None or isinstance(memo, verdict_memo.Memo)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=5)
        | st.binary(max_size=5),
        lambda inner: st.lists(inner, max_size=8),
        max_leaves=30,
    )
)
def test_fuzzed_shapes_never_raise(value):
    memo = verdict_memo.decode(msgpack.packb(value), [1, 2])
    assert memo is None


def test_no_memo_while_a_recorded_file_is_not_settled(project, pivot):
    """A dep whose times are at or after the command's racy marker (here: an mtime in the
    future) may still change with the same stat key: no memo is written until it is
    settled."""
    _project(project, pivot)
    dep = project / "in.txt"
    now = dep.stat().st_mtime_ns
    os.utime(dep, ns=(now, now + 3600 * 10**9))
    for _ in range(2):
        assert "Every stage is up to date" in pivot("run").stdout
        assert verdict_memo_key(project) is None
    os.utime(dep, ns=(now, now))
    pivot("run")
    assert verdict_memo_key(project) is not None
    assert _ran(project) == []


def test_untrack_and_gc_are_seen_or_change_nothing(project, pivot):
    write_files(project, {**FILES, "raw.txt": "raw"})
    pivot("track", "raw.txt")
    _project(project, pivot)
    pivot("untrack", "raw.txt")
    before = verdict_memo_key(project)
    assert "Every stage is up to date" in pivot("run").stdout
    assert verdict_memo_key(project) != before  # a tracked-data record removed: not replayed
    pivot("run")
    pivot("gc", "-w")  # changes no workspace file, lock file or record
    assert "Every stage is up to date" in pivot("run").stdout
    (project / "made.txt").unlink()
    assert "restored" in pivot("run").stdout
    assert _ran(project) == []


def test_a_memo_that_is_a_fifo_a_folder_or_a_link_is_a_miss(project, pivot, tmp_path):
    _project(project, pivot)
    memo = project / ".pivot" / "tmp" / verdict_memo.NAME
    elsewhere = tmp_path / "memo"
    elsewhere.write_bytes(memo.read_bytes())
    memo.unlink()
    memo.symlink_to(elsewhere)
    pivot("run")  # not replayed through the link: the full no-op writes its own memo
    assert not memo.is_symlink()
    for n, make in enumerate((os.mkfifo, os.mkdir)):
        memo.unlink(missing_ok=True)
        make(memo)  # a fifo is never waited on; a folder neither stops the run nor hides it
        (project / "in.txt").write_text(f"other{n}")
        pivot("run")
        assert (project / "made.txt").read_text() == f"other{n}3-h"
        assert not memo.exists() or memo.is_dir()


def _dep_through_a_link(project: pathlib.Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "in.txt").write_text("data")  # the same content
    (project / "in.txt").unlink()
    (project / "in.txt").symlink_to(os.path.join("data", "in.txt"))


def _out_through_a_link(project: pathlib.Path) -> None:
    (project / "copy.txt").write_text((project / "made.txt").read_text())
    (project / "made.txt").unlink()
    (project / "made.txt").symlink_to("copy.txt")


def _replace_by_folder(path: pathlib.Path) -> None:
    path.unlink()
    path.mkdir()


LOCK = pathlib.Path(".pivot", "stages", "p", "make.lock")
CHANGES = {
    "dep through a link": _dep_through_a_link,
    "dep became a folder": lambda p: _replace_by_folder(p / "in.txt"),
    "empty folder in a folder output": lambda p: (p / "tree" / "sub" / "empty").mkdir(),
    "file added to a folder output": lambda p: (p / "tree" / "sub" / "new.txt").write_text("n"),
    "output chmod": lambda p: os.chmod(p / "made.txt", 0o600),
    "output through a link": _out_through_a_link,
    "output deleted": lambda p: (p / "made.txt").unlink(),
    "upstream output edited": lambda p: (p / "made.txt").write_text("edited"),
    "upstream output rewritten keeping mtime": lambda p: rewrite_keeping_mtime(
        p / "made.txt", "DATA"
    ),
    "lock not JSON": lambda p: (p / LOCK).write_text("{not json"),
    "lock deleted": lambda p: (p / LOCK).unlink(),
    "lock folder of another pipeline": lambda p: (p / ".pivot" / "stages" / "q").mkdir(),
    "config link mode": lambda p: (p / ".pivot" / "config.yaml").write_text(
        "cache:\n  link: symlink\n"
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_after_a_change_the_run_answers_as_the_full_run_of_a_twin(project, pivot, tmp_path, change):
    """The run after `change` prints, exits and executes as the full run of a copy of the
    project (whose memo is foreign, so never replayed) does."""
    _project(project, pivot)
    CHANGES[change](project)
    twin = tmp_path / "twin"
    shutil.copytree(project, twin, symlinks=True)
    here = pivot("run", rc=None)
    there = pivot("run", cwd=twin, rc=None)

    def seen(proc, root: pathlib.Path) -> tuple[int, str, str]:
        text = (proc.stdout, proc.stderr)
        return (proc.returncode, *(_without_time(t.replace(str(root), "ROOT")) for t in text))

    assert seen(here, project) == seen(there, twin)
    assert _ran(project) == _ran(twin)
