"""What a changed path means for a scope, and which folders are watched for it."""

from __future__ import annotations

from pivot.watch.paths import CODE, FOLDER, INPUT, OUTPUT, WatchSet


def _watch_set(root) -> WatchSet:
    return WatchSet(
        root,
        code={"pipeline.py", "lib/helpers.py", "analysis/pipeline.py"},
        inputs={"raw.txt", "data", "incoming/new/x.csv"},
        outputs={"shared/data.csv": "data_prep/prepare", "out": "data_prep/tree"},
        pipeline_dirs={"", "analysis", "incoming", "incoming/new"},
    )


def test_classify(tmp_path) -> None:
    watch = _watch_set(tmp_path)
    assert watch.classify("lib/helpers.py") == CODE
    assert watch.classify("incoming/pipeline.py") == CODE  # a new producer may appear
    assert watch.classify("incoming/new/pivot.yaml") == CODE
    assert watch.classify("raw.txt") == INPUT
    assert watch.classify("data/sub/f1") == INPUT  # inside a directory dep
    assert watch.classify("shared/data.csv") == OUTPUT
    assert watch.classify("out/part-1") == OUTPUT
    assert watch.output_of("out/part-1") == "out"
    assert watch.classify("incoming") == FOLDER  # on the way to a missing dep
    assert watch.classify("lib") == FOLDER
    for ignored in (
        ".git/index",
        ".pivot/stages/x.lock",
        "lib/__pycache__/helpers.cpython-311.pyc",
        "data/.git/x",
        "notes.txt",
        "lib/other.py",
        "elsewhere/pipeline.py",
        "",
    ):
        assert watch.classify(ignored) is None, ignored


def test_roots_watch_what_exists_and_the_way_to_what_does_not(tmp_path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "analysis").mkdir()
    watch = _watch_set(tmp_path)
    flat, trees = watch.roots()
    root = str(tmp_path)
    assert trees == {f"{root}/data"}  # a directory dep, with everything below it
    # incoming/new/x.csv and shared/data.csv: their nearest existing folder, the root.
    assert flat == {root, f"{root}/lib", f"{root}/analysis"}
    (tmp_path / "incoming" / "new").mkdir(parents=True)
    flat, _ = watch.roots()
    assert f"{root}/incoming/new" in flat
