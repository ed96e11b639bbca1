"""Cross-pipeline discovery, pivot.yaml, isolation between pipelines, and their errors."""

from __future__ import annotations

from support import COUNTER, executions, write_files

HEADER = (
    """
import pathlib
from typing import Annotated, TypedDict

import pivot
"""
    + COUNTER
)


def producer(name: str, out: str, text: str = "x") -> str:
    return (
        HEADER
        + f"""
pipeline = pivot.Pipeline("{name}")

def make() -> Annotated[str, pivot.Out("{out}", pivot.loaders.Text())]:
    _count("{name}")
    return "{text}"

pipeline.register(make)
"""
    )


def consumer(name: str, dep: str, out: str) -> str:
    return (
        HEADER
        + f"""
pipeline = pivot.Pipeline("{name}")

def use(x: Annotated[str, pivot.Dep("{dep}", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("{out}", pivot.loaders.Text())]:
    _count("{name}")
    return x + "!"

pipeline.register(use)
"""
    )


def test_only_needed_producer_stages_join_the_graph(project, pivot) -> None:
    write_files(
        project,
        {
            "up/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("up")

def needed() -> Annotated[str, pivot.Out("a.txt", pivot.loaders.Text())]:
    _count("needed")
    return "a"

def unrelated() -> Annotated[str, pivot.Out("b.txt", pivot.loaders.Text())]:
    _count("unrelated")
    return "b"

pipeline.register(needed)
pipeline.register(unrelated)
""",
            "down/pipeline.py": consumer("down", "../up/a.txt", "c.txt"),
        },
    )
    pivot("run", cwd="down")
    assert executions(project) == ["needed", "down"]


def test_fallback_scan_finds_producer_off_the_upward_path(project, pivot) -> None:
    write_files(
        project,
        {
            "producers/deep/pipeline.py": producer("deep", "../../data/made.txt", "made"),
            "consumer/pipeline.py": consumer("consumer", "../data/made.txt", "out.txt"),
        },
    )
    pivot("run", cwd="consumer")
    assert (project / "consumer/out.txt").read_text() == "made!"
    (project / "producers/deep/pipeline.py").write_text(
        producer("deep", "../../data/made.txt", "changed")
    )
    pivot("run", cwd="consumer")
    assert (project / "consumer/out.txt").read_text() == "changed!"


def test_recursive_discovery_through_three_pipelines(project, pivot) -> None:
    write_files(
        project,
        {
            "a/pipeline.py": producer("a", "a.txt", "A"),
            "b/pipeline.py": consumer("b", "../a/a.txt", "b.txt"),
            "c/pipeline.py": consumer("c", "../b/b.txt", "c.txt"),
        },
    )
    pivot("run", cwd="c")
    assert (project / "c/c.txt").read_text() == "A!!"
    assert executions(project) == ["a", "b", "c"]


def test_same_named_helper_modules_stay_separate(project, pivot) -> None:
    use_utils = (
        HEADER
        + """
import utils

pipeline = pivot.Pipeline("{name}")

def stage() -> Annotated[str, pivot.Out("value.txt", pivot.loaders.Text())]:
    return utils.VALUE
{extra}
pipeline.register(stage)
"""
    )
    write_files(
        project,
        {
            "one/utils.py": "VALUE = 'one'\n",
            "two/utils.py": "VALUE = 'two'\n",
            "one/pipeline.py": use_utils.format(name="one", extra=""),
            "two/pipeline.py": use_utils.format(name="two", extra=""),
        },
    )
    pivot("run", "--all")
    assert (project / "one/value.txt").read_text() == "one"
    assert (project / "two/value.txt").read_text() == "two"


def test_pivot_yaml_pipeline(project, pivot) -> None:
    write_files(
        project,
        {
            "yamlpipe/stages.py": HEADER
            + """
def shout(src: Annotated[str, pivot.Dep("default_in.txt", pivot.loaders.Text())], params: dict) -> Annotated[str, pivot.Out("default_out.txt", pivot.loaders.Text())]:
    return src.upper() * params["times"]
""",
            "yamlpipe/pivot.yaml": """
name: shouting
stages:
  shout:
    python: stages.shout
    deps: {src: input.txt}
    outs: loud.txt
    params: {times: 2}
""",
            "yamlpipe/input.txt": "hey",
        },
    )
    pivot("run", cwd="yamlpipe")
    assert (project / "yamlpipe/loud.txt").read_text() == "HEYHEY"
    assert (project / ".pivot/stages/shouting/shout.lock").is_file()


def test_yaml_unknown_function_and_key(project, pivot) -> None:
    write_files(
        project,
        {
            "y/stages.py": "def real():\n    pass\n",
            "y/pivot.yaml": "stages:\n  s:\n    python: stages.missing\n",
        },
    )
    proc = pivot("run", cwd="y", rc=1)
    assert "pivot.yaml" in proc.stderr and "missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    (project / "y/pivot.yaml").write_text("stages:\n  s:\n    python: stages.real\n    cmd: x\n")
    proc = pivot("run", cwd="y", rc=1)
    assert "unknown key 'cmd'" in proc.stderr and "pivot.yaml" in proc.stderr


def test_yaml_bad_resources(project, pivot) -> None:
    write_files(project, {"y/stages.py": "def real(out):\n    pass\n"})
    body = "stages:\n  s:\n    python: stages.real\n    outs: {out: o.txt}\n    resources: %s\n"
    (project / "y/pivot.yaml").write_text(body % "[GPU]")
    proc = pivot("run", cwd="y", rc=1)
    assert "pivot.yaml, line 5: `resources` of stage 's' must be a mapping" in proc.stderr
    (project / "y/pivot.yaml").write_text(body % "{GPU: -1}")
    proc = pivot("run", cwd="y", rc=1)
    assert "pivot.yaml, line 2: stage 's'" in proc.stderr and "'GPU'" in proc.stderr
    assert "positive number" in proc.stderr and "Traceback" not in proc.stderr


def test_pipeline_py_and_pivot_yaml_in_one_directory(project, pivot) -> None:
    write_files(project, {"d/pipeline.py": producer("d", "x.txt"), "d/pivot.yaml": "stages: {}\n"})
    proc = pivot("run", cwd="d", rc=1)
    assert "pipeline.py" in proc.stderr and "pivot.yaml" in proc.stderr
    assert "both" in proc.stderr


def test_duplicate_pipeline_names(project, pivot) -> None:
    write_files(
        project,
        {
            "a/pipeline.py": producer("same", "a.txt"),
            "b/pipeline.py": producer("same", "b.txt"),
        },
    )
    proc = pivot("run", "--all", rc=1)
    assert "a/pipeline.py" in proc.stderr and "b/pipeline.py" in proc.stderr
    assert "'same'" in proc.stderr


def test_two_pipelines_producing_one_path(project, pivot) -> None:
    write_files(
        project,
        {
            "a/pipeline.py": producer("a", "../shared.txt"),
            "b/pipeline.py": producer("b", "../shared.txt"),
        },
    )
    proc = pivot("run", "--all", rc=1)
    assert "a/make" in proc.stderr and "b/make" in proc.stderr and "shared.txt" in proc.stderr


def test_cycle_across_pipelines_names_stages_and_files(project, pivot) -> None:
    write_files(
        project,
        {
            "a/pipeline.py": consumer("a", "../b/b.txt", "a.txt"),
            "b/pipeline.py": consumer("b", "../a/a.txt", "b.txt"),
        },
    )
    proc = pivot("run", cwd="a", rc=1)
    for needle in ("cycle", "a/use", "b/use", "a/pipeline.py", "b/pipeline.py"):
        assert needle in proc.stderr


def test_missing_cross_pipeline_dep_says_where_it_searched(project, pivot) -> None:
    write_files(
        project,
        {
            "a/pipeline.py": producer("a", "a.txt"),
            "b/pipeline.py": consumer("b", "../a/nope.txt", "b.txt"),
        },
    )
    proc = pivot("run", cwd="b", rc=1)
    assert "b/use" in proc.stderr and "a/nope.txt" in proc.stderr
    assert "a/pipeline.py" in proc.stderr


def test_failing_upstream_pipeline_import_names_file(project, pivot) -> None:
    write_files(
        project,
        {
            "a/pipeline.py": "import pivot\n\n\nx = 1 / 0\n",
            "b/pipeline.py": consumer("b", "../a/a.txt", "b.txt"),
        },
    )
    proc = pivot("run", cwd="b", rc=1)
    assert "a/pipeline.py" in proc.stderr and "line 4" in proc.stderr
    assert "ZeroDivisionError" in proc.stderr


def test_nested_pivot_dir_is_not_a_root(project, pivot) -> None:
    (project / "inner/.pivot").mkdir(parents=True)
    write_files(
        project,
        {
            "pipeline.py": producer("top", "top.txt", "T"),
            "inner/pipeline.py": consumer("inner", "../top.txt", "in.txt"),
        },
    )
    pivot("run", cwd="inner")
    assert (project / ".pivot/stages/inner/use.lock").is_file()
    assert not (project / "inner/.pivot/stages").exists()


def test_scan_index_notices_a_new_pipeline(project, pivot) -> None:
    write_files(
        project,
        {
            "consumer/pipeline.py": consumer("consumer", "../data/in.txt", "out.txt"),
            "data/in.txt": "seed",
        },
    )
    pivot("run", cwd="consumer")
    assert (project / "consumer/out.txt").read_text() == "seed!"
    (project / "data/in.txt").unlink()
    write_files(project, {"late/deep/pipeline.py": producer("late", "../../data/in.txt", "late")})
    pivot("run", cwd="consumer")
    assert (project / "consumer/out.txt").read_text() == "late!"
    assert executions(project)[-2:] == ["late", "consumer"]


def test_generated_stages_are_found_after_their_config_changes(project, pivot) -> None:
    write_files(
        project,
        {
            "gen/splits.txt": "train\n",
            "gen/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("gen")

def make_split(name):
    def split() -> Annotated[str, pivot.Out(f"../shared/{name}.csv", pivot.loaders.Text())]:
        return name
    return split

for line in pathlib.Path("splits.txt").read_text().split():
    pipeline.register(make_split(line), name=line)
""",
            "use/pipeline.py": consumer("use", "../shared/train.csv", "out.txt"),
        },
    )
    pivot("run", cwd="use")
    (project / "use/pipeline.py").write_text(consumer("use", "../shared/test.csv", "out.txt"))
    (project / "gen/splits.txt").write_text("train\ntest\n")
    pivot("run", cwd="use")
    assert (project / "use/out.txt").read_text() == "test!"
