"""What a real multi-pipeline project trips over (issue 17): helpers at the project root,
a broken unrelated pipeline, outputs kept in the cache, relative remotes, CLI consistency."""

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


def test_child_pipeline_imports_project_helpers_when_loading_and_running(project, pivot) -> None:
    write_files(
        project,
        {
            "lib/__init__.py": "",
            "lib/features.py": "def design_matrix(x):\n    return x.upper()\n",
            "lib/late.py": "SUFFIX = '!'\n",
            "train/pipeline.py": HEADER
            + """
from lib.features import design_matrix

pipeline = pivot.Pipeline("train")

def fit() -> Annotated[str, pivot.Out("model.txt", pivot.loaders.Text())]:
    from lib.late import SUFFIX
    _count("fit")
    return design_matrix("abc") + SUFFIX

pipeline.register(fit)
""",
        },
    )
    pivot("run", cwd="train")
    assert (project / "train/model.txt").read_text() == "ABC!"
    assert pivot("status", cwd="train").stdout.count("up to date") >= 1
    # the fingerprint follows the helpers, both the imported one and the lazy one
    (project / "lib/features.py").write_text("def design_matrix(x):\n    return x.lower()\n")
    assert "code changed" in pivot("status", cwd="train").stdout
    pivot("run", cwd="train")
    assert (project / "train/model.txt").read_text() == "abc!"
    (project / "lib/late.py").write_text("SUFFIX = '?'\n")
    pivot("run", cwd="train")
    assert (project / "train/model.txt").read_text() == "abc?"
    assert executions(project) == ["fit", "fit", "fit"]


def test_the_pipelines_own_folder_wins_over_the_project_root(project, pivot) -> None:
    write_files(
        project,
        {
            "utils.py": "VALUE = 'root'\n",
            "child/utils.py": "VALUE = 'child'\n",
            "child/pipeline.py": HEADER
            + """
import utils

pipeline = pivot.Pipeline("child")

def stage() -> Annotated[str, pivot.Out("value.txt", pivot.loaders.Text())]:
    return utils.VALUE

pipeline.register(stage)
""",
        },
    )
    pivot("run", cwd="child")
    assert (project / "child/value.txt").read_text() == "child"


def _four_pipelines(project) -> None:
    write_files(
        project,
        {
            "data/raw.csv": "a,b\n",
            "pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("data_prep")

def clean(raw: Annotated[str, pivot.Dep("data/raw.csv", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("data_prep/clean.csv", pivot.loaders.Text())]:
    _count("clean")
    return raw.upper()

pipeline.register(clean)
""",
            "train/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("train")

def fit(clean: Annotated[str, pivot.Dep("../data_prep/clean.csv", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("model.txt", pivot.loaders.Text())]:
    _count("fit")
    return clean + "model"

pipeline.register(fit)
""",
            "sweep/pipeline.py": "import pivot\npipeline = pivot.Pipeline('sweep'\n",
        },
    )


def test_a_broken_unrelated_pipeline_is_a_warning(project, pivot) -> None:
    _four_pipelines(project)
    for _ in range(2):  # the first builds the scan's index, the second reads it
        proc = pivot("run", cwd="train")
        assert "Skipping the pipeline sweep/pipeline.py" in proc.stderr
        assert "syntax error" in proc.stderr
    assert (project / "train/model.txt").read_text() == "A,B\nmodel"
    proc = pivot("status", cwd="train")
    assert "sweep/pipeline.py" in proc.stderr
    proc = pivot("run", "--all", rc=1)
    assert "sweep/pipeline.py" in proc.stderr and "syntax error" in proc.stderr
    proc = pivot("status", "sweep/tune", rc=1)
    assert "sweep/pipeline.py" in proc.stderr and "syntax error" in proc.stderr


def test_a_broken_pipeline_that_may_produce_a_missing_dep_fails_the_command(project, pivot) -> None:
    _four_pipelines(project)
    write_files(
        project,
        {
            "report/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("report")

def summarise(scores: Annotated[str, pivot.Dep("../results/scores.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("report.txt", pivot.loaders.Text())]:
    return scores

pipeline.register(summarise)
"""
        },
    )
    proc = pivot("run", cwd="report", rc=1)
    assert "results/scores.txt" in proc.stderr
    assert "may produce it" in proc.stderr and "sweep/pipeline.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def _chain(project) -> None:
    """raw -> data_prep/clean (root) -> train/fit -> report/summarise."""
    _four_pipelines(project)
    (project / "sweep/pipeline.py").unlink()
    write_files(
        project,
        {
            "report/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("report")

def summarise(model: Annotated[str, pivot.Dep("../train/model.txt", pivot.loaders.Text())]) -> Annotated[str, pivot.Out("report.txt", pivot.loaders.Text())]:
    _count("summarise")
    return "report of " + model

pipeline.register(summarise)
"""
        },
    )


def test_outputs_kept_in_the_cache_are_up_to_date(project, pivot) -> None:
    _chain(project)
    pivot("run", cwd="report")
    (project / "data_prep/clean.csv").unlink()  # as in a clone: only the cache has it
    status = pivot("status", cwd="report").stdout
    line = next(x for x in status.splitlines() if "data_prep/clean" in x)
    assert "up to date" in line and "in cache" in line, status
    assert "restorable" not in status and "is missing" not in status
    assert "Every stage is up to date (3 stages)." in status
    plan = pivot("run", "-n", cwd="report").stdout
    line = next(x for x in plan.splitlines() if "data_prep/clean" in x)
    assert "up to date" in line and "in cache" in line and "missing" not in line, plan
    proc = pivot("run", cwd="report")
    assert "Every stage is up to date (3 stages" in proc.stdout
    assert not (project / "data_prep/clean.csv").exists()
    # at the root, data_prep/clean is the target: run would restore it
    assert "restorable" in pivot("status").stdout
    assert executions(project) == ["clean", "fit", "summarise"]


def test_a_relative_directory_remote_is_relative_to_the_project_root(
    project, pivot, tmp_path
) -> None:
    _chain(project)
    added = pivot("remote", "add", "--default", "origin", "../remote-store", cwd="train")
    store = tmp_path / "remote-store"
    assert f"../remote-store ({store}, does not exist)" in added.stdout
    pivot("run", cwd="report")
    pivot("push", "--all")
    assert (store / "index").is_dir()
    listed = pivot("remote", "list").stdout
    assert f"origin\t../remote-store ({store})" in listed
    assert "../remote-store" in (project / ".pivot/config.yaml").read_text()  # as typed
    # a clone placed elsewhere: the same relative url names a folder that is not there
    clone = tmp_path / "elsewhere" / "clone"
    clone.parent.mkdir()
    import shutil

    shutil.copytree(
        project, clone, ignore=shutil.ignore_patterns("cache", "state.db", "*.txt", "*.csv")
    )
    (clone / "data").mkdir(exist_ok=True)
    (clone / "data/raw.csv").write_text("a,b\n")
    missing = tmp_path / "elsewhere" / "remote-store"
    from support import PivotCLI

    cloned = PivotCLI(clone)
    assert f"({missing}, does not exist)" in cloned("remote", "list").stdout
    for command in ("fetch", "pull"):
        proc = cloned(command, rc=1)
        assert f"is the directory {missing}" in proc.stderr and "does not exist" in proc.stderr
    proc = cloned("run", cwd="report")
    assert f"is the directory {missing}" in proc.stderr and "does not exist" in proc.stderr


def test_pivot_yaml_stages_of_plain_functions(project, pivot) -> None:
    write_files(
        project,
        {
            "lib/__init__.py": "",
            "lib/reporting.py": """
import json


def summarise(model, notes, report, params):
    text = open(model).read() + open(notes).read()
    with open(report, "w") as out:
        out.write(json.dumps({"text": text, "title": params["title"]}))
""",
            "report/notes.txt": "notes",
            "report/pivot.yaml": """
name: report
stages:
  summarise:
    python: lib.reporting.summarise
    deps:
      model: ../train/model.txt
      notes: notes.txt
    outs:
      report: out/report.json
    params:
      title: Weekly
""",
            "train/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("train")

def fit() -> Annotated[str, pivot.Out("model.txt", pivot.loaders.Text())]:
    _count("fit")
    return "model "

pipeline.register(fit)
""",
        },
    )
    pivot("run", cwd="report")
    import json

    report = json.loads((project / "report/out/report.json").read_text())
    assert report == {"text": "model notes", "title": "Weekly"}
    assert "Every stage is up to date" in pivot("run", cwd="report").stdout
    listed = pivot("list", cwd="report").stdout
    assert "train/model.txt" in listed and "report/out/report.json" in listed
    yaml_file = project / "report/pivot.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("Weekly", "Daily"))
    pivot("run", cwd="report")
    assert json.loads((project / "report/out/report.json").read_text())["title"] == "Daily"


def test_pivot_yaml_errors_name_the_key_and_line(project, pivot) -> None:
    write_files(project, {"y/stages.py": "def go(src, dst):\n    pass\n"})
    cases = {
        "stages:\n  s:\n    python: stages.go\n    deps: {src: a.txt}\n    outs: {dst: b.txt}\n    cmd: x\n": (
            "line 6",
            "unknown key 'cmd'",
        ),
        "stages:\n  s:\n    python: stages.go\n    deps: [a.txt]\n    outs: {dst: b.txt}\n": (
            "line 4",
            "`deps` of stage 's' must be a mapping of names to paths, not a list",
        ),
        "stages:\n  s:\n    python: stages.go\n    deps: {src: 3}\n    outs: {dst: b.txt}\n": (
            "line 4",
            "'src' in `deps` of stage 's' must be a path, not a int",
        ),
        "name: [x]\nstages: {}\n": ("line 1", "`name` must be a string"),
        "stages:\n  s:\n    python: stages.go\n    deps: {source: a.txt}\n    outs: {dst: b.txt}\n": (
            "line 2",
            "it takes no argument source; nothing gives its argument(s) src",
        ),
        "stages:\n  s:\n    python: stages.go\n    deps: {src: a.txt}\n    outs: b.txt\n": (
            "line 2",
            "must name each output as an argument",
        ),
        "stages:\n  s: [1\n": ("line 3", "not valid YAML"),
    }
    for text, (line, message) in cases.items():
        (project / "y/pivot.yaml").write_text(text)
        proc = pivot("list", cwd="y", rc=1)
        assert f"pivot.yaml, {line}" in proc.stderr and message in proc.stderr, (text, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_quiet_and_json_on_every_per_item_command(project, pivot, tmp_path) -> None:
    import json

    _chain(project)
    pivot("remote", "add", "--default", "origin", str(tmp_path / "store"))
    ran = json.loads(pivot("run", "--json", cwd="report").stdout)
    assert [s["stage"] for s in ran["stages"]] == [
        "data_prep/clean",
        "train/fit",
        "report/summarise",
    ]
    assert ran["counts"]["ran"] == 3 and ran["total"] == 3
    for command in ("push", "fetch", "pull", "checkout", "status", "verify", "run"):
        proc = pivot(command, "-q", cwd="report")
        assert len(proc.stdout.strip().splitlines()) == 1, (command, proc.stdout)
    fetched = json.loads(pivot("fetch", "--json", cwd="report").stdout)
    assert fetched["blobs"] == 0 and fetched["up_to_date"] == 3  # local blobs count too
    verified = json.loads(pivot("verify", "--json", cwd="report").stdout)
    assert verified["ok"] and verified["total"] == 3 and verified["problems"] == []
    checked = json.loads(pivot("checkout", "--json", cwd="report").stdout)
    assert checked == {"checked_out": 0, "already_in_place": 3}
    dag = json.loads(pivot("dag", "--json", cwd="report").stdout)
    assert {"from": "train/fit", "to": "report/summarise", "path": "train/model.txt"} in dag[
        "edges"
    ]
    listed = json.loads(pivot("list", "--json", cwd="report").stdout)
    assert listed[-1]["outs"] == ["report/report.txt"]
    plan = json.loads(pivot("run", "-n", "--json", cwd="report").stdout)
    assert {row["action"] for row in plan["plan"]} == {"skip"}


def test_status_r_names_the_remote_as_run_r_does(project, pivot, tmp_path) -> None:
    _chain(project)
    pivot("remote", "add", "origin", str(tmp_path / "gone"))
    pivot("remote", "add", "other", str(tmp_path / "other"))
    # -r picks the remote, as for run; only --remote reads it
    assert "will run" in pivot("status", "-r", "origin", cwd="report").stdout
    proc = pivot("status", "-r", "origin", "--remote", cwd="report", rc=1)
    assert "does not exist" in proc.stderr


def test_param_change_shows_old_and_new_values_and_summary_counts_loading(project, pivot) -> None:
    write_files(
        project,
        {
            "p/pipeline.py": HEADER
            + """
import time

time.sleep(0.5)  # a slow pipeline file: the summary's time includes it
pipeline = pivot.Pipeline("p")

def fit(params: dict) -> Annotated[str, pivot.Out("m.txt", pivot.loaders.Text())]:
    return str(params)

pipeline.register(fit, params={"alpha": 0.1, "name": "x"})
"""
        },
    )
    summary = pivot("run", cwd="p").stdout.strip().splitlines()[-1]
    assert float(summary.rsplit(" ", 1)[1].rstrip("s.")) >= 0.5, summary
    pipeline_file = project / "p/pipeline.py"
    pipeline_file.write_text(pipeline_file.read_text().replace("0.1", "100"))
    assert "param changed: alpha 0.1 → 100" in pivot("status", cwd="p").stdout
    assert "param changed: alpha 0.1 → 100" in pivot("run", "-n", cwd="p").stdout


def test_status_at_the_root_mentions_stale_pipelines_elsewhere(project, pivot) -> None:
    _chain(project)
    pivot("run", cwd="report")
    assert "other pipeline" not in pivot("status").stdout
    (project / "train/model.txt").write_text("edited")  # train/fit's output, report's dep
    status = pivot("status").stdout
    assert "Every stage is up to date (1 stage)." in status
    assert "2 stages in 2 other pipelines are not up to date; pivot status --all" in status
    write_files(
        project,
        {
            "sweep/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("sweep")

def tune() -> Annotated[str, pivot.Out("best.txt", pivot.loaders.Text())]:
    return "best"

pipeline.register(tune)
"""
        },
    )
    pivot("status", "--all")  # the scan's index now knows sweep/tune, which never ran
    assert "3 stages in 3 other pipelines" in pivot("status").stdout
    assert "other pipeline" not in pivot("status", "--all").stdout


def _sweep(project, runs: int) -> None:
    """A generated pipeline: one stage per run, each writing sweep/scores/s<i>.json."""
    write_files(
        project,
        {
            "sweep/runs.txt": str(runs),
            "sweep/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("sweep")

def make(i):
    def score() -> Annotated[dict, pivot.Out(f"scores/s{i}.json", pivot.loaders.JSON())]:
        _count(f"s{i}")
        return {"run": i, "score": i * 10}
    score.__name__ = f"score{i}"
    return score

for n in range(int(pathlib.Path(__file__).with_name("runs.txt").read_text())):
    pipeline.register(make(n), name=f"s{n}")
""",
        },
    )


def test_fan_in_over_a_list_and_a_glob_of_outputs(project, pivot) -> None:
    import json

    _sweep(project, 3)
    write_files(
        project,
        {
            "pick/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("pick")

def best(
    scores: Annotated[dict, pivot.Dep("../sweep/scores/*.json", pivot.loaders.JSON())],
    firsts: Annotated[list, pivot.Dep(["../sweep/scores/s1.json", "../sweep/scores/s0.json"], pivot.loaders.JSON())],
) -> Annotated[dict, pivot.Out("best.json", pivot.loaders.JSON())]:
    _count("best")
    return {"paths": list(scores), "best": max(s["score"] for s in scores.values()),
            "firsts": [f["run"] for f in firsts]}

pipeline.register(best)
""",
        },
    )
    pivot("run", cwd="pick")
    result = json.loads((project / "pick/best.json").read_text())
    paths = [f"../sweep/scores/s{i}.json" for i in range(3)]
    assert result == {"paths": paths, "best": 20, "firsts": [1, 0]}
    assert sorted(executions(project)) == ["best", "s0", "s1", "s2"]
    dag = json.loads(pivot("dag", "--json", cwd="pick").stdout)
    producers = {e["from"] for e in dag["edges"] if e["to"] == "pick/best"}
    assert producers == {"sweep/s0", "sweep/s1", "sweep/s2"}
    assert "Every stage is up to date" in pivot("run", cwd="pick").stdout
    _sweep(project, 4)  # a new generated stage joins the glob: best runs again
    pivot("run", cwd="pick")
    result = json.loads((project / "pick/best.json").read_text())
    assert result["best"] == 30 and len(result["paths"]) == 4
    assert executions(project)[4:] == ["s3", "best"]


def test_a_glob_matching_no_output_names_the_pattern(project, pivot) -> None:
    write_files(
        project,
        {
            "pick/pipeline.py": HEADER
            + """
pipeline = pivot.Pipeline("pick")

def best(scores: Annotated[dict, pivot.Dep("../nothing/*.json", pivot.loaders.JSON())]) -> Annotated[str, pivot.Out("best.txt", pivot.loaders.Text())]:
    return ""

pipeline.register(best)
""",
        },
    )
    proc = pivot("run", cwd="pick", rc=1)
    assert "'../nothing/*.json'" in proc.stderr and "matches no output" in proc.stderr


def _edit_in_place(path) -> None:
    """Edit a linked output as a user with the rights to would (the object is 0444)."""
    import os

    target = os.path.realpath(path)
    os.chmod(target, 0o644)
    with open(path, "w") as handle:
        handle.write("EDITED")


def test_cache_link_config_and_linked_outputs_edited_in_place(project, pivot, tmp_path) -> None:
    import os

    _chain(project)
    (project / ".pivot/config.yaml").write_text("cache:\n  link: symlink\n")
    pivot("run", cwd="report")
    store = tmp_path / "store"
    pivot("remote", "add", "--default", "origin", str(store))
    pivot("push", "--all")
    model = project / "train/model.txt"
    for command in (["checkout"], ["pull"], ["run"]):
        model.unlink()
        pivot(*command, cwd="train")
        assert model.is_symlink(), command  # placed as cache.link says
    config = project / ".pivot/config.yaml"
    config.write_text(config.read_text().replace("symlink", "hardlink"))
    model.unlink()
    pivot("checkout", cwd="train")
    assert not model.is_symlink() and os.stat(model).st_nlink == 2
    _edit_in_place(model)
    pivot("remote", "remove", "origin")  # no remote: the local object is all there is
    status = pivot("status", cwd="train").stdout
    assert "will run" in status and "restorable" not in status, status
    assert "its outputs are in no cache that can be reached" in status
    assert list((project / ".pivot/cache/quarantine").iterdir())  # the damaged object
    pivot("run", cwd="train")
    assert model.read_text() == "A,B\nmodel"
    # the re-created object is good: a fresh push and a pull elsewhere give the right bytes
    pivot("remote", "add", "--default", "clean", str(tmp_path / "clean"))
    pivot("push", "--all")
    model.unlink()
    import shutil

    shutil.rmtree(project / ".pivot/cache")
    pivot("pull", "--all")
    assert model.read_text() == "A,B\nmodel"


def test_a_bad_cache_link_in_the_config_names_the_key(project, pivot) -> None:
    (project / ".pivot/config.yaml").write_text("cache:\n  link: reflinky\n")
    write_files(project, {"pipeline.py": HEADER + "pipeline = pivot.Pipeline('p')\n"})
    proc = pivot("checkout", rc=1)
    assert "cache.link" in proc.stderr and "copy, hardlink, symlink" in proc.stderr


def _complete(pivot, words: str, **env) -> list[str]:
    """What bash completion offers after `words` (click's protocol, as the script asks)."""
    cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    proc = pivot(_PIVOT_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=cword, **env)
    return [line.partition(",")[2] for line in proc.stdout.splitlines()]


def test_shell_completion_of_commands_stages_pipelines_and_remotes(
    project, pivot, tmp_path
) -> None:
    _chain(project)
    pivot("run", cwd="report")
    pivot("remote", "add", "--default", "origin", str(tmp_path / "store"))
    pivot("remote", "add", "backup", str(tmp_path / "backup"))
    for shell, marker in (
        ("bash", "complete -o nosort -F"),
        ("zsh", "#compdef pivot"),
        ("fish", "complete --no-files --command pivot"),
    ):
        script = pivot("completion", shell).stdout
        assert marker in script and "_PIVOT_COMPLETE" in script, shell
    assert _complete(pivot, "pivot sta") == ["status"]
    assert "train/fit" in _complete(pivot, "pivot run ")
    assert _complete(pivot, "pivot status tr") == ["train/", "train/fit"]
    assert _complete(pivot, "pivot push -r ") == ["backup", "origin"]
    assert _complete(pivot, "pivot remote remove o") == ["origin"]
    assert _complete(pivot, "pivot completion ") == ["bash", "zsh", "fish"]
