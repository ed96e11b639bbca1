"""`pivot plots show/diff`: one self-contained page, loaded offline in real headless
Chromium, every chart drawn; data of older revisions from the cache or the remote."""

from __future__ import annotations

import shutil

import pytest
from browser_support import charts_drawn, chromium, marks, rendered_dom  # noqa: F401
from results_support import build_history, git
from support import PivotCLI, write_files


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> PivotCLI:
    return PivotCLI(build_history(tmp_path_factory.mktemp("plots")))


def _no_network_needed(html: str) -> None:
    for needle in ('src="http', "src='http", 'href="http', "@import"):
        assert needle not in html


def test_plots_diff_draws_one_series_per_revision(history, chromium, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "page"
    done = history("plots", "diff", "HEAD~2", "HEAD~1", "experiment", "-o", str(out))
    assert f"Wrote 2 plot(s) to {out / 'index.html'}" in done.stdout
    assert done.stderr == ""
    html = (out / "index.html").read_text()
    _no_network_needed(html)
    dom = rendered_dom(chromium, out / "index.html")
    assert charts_drawn(dom) == 2
    assert marks(dom, "line mark") == 3  # the loss curve: one line per revision
    assert marks(dom, "rect mark") == 12  # the confusion matrix: 2 x 2 cells per revision
    assert git(history.root, "status", "--porcelain") == ""


def test_plots_show_of_the_workspace_from_a_subfolder(history, chromium) -> None:  # noqa: F811
    done = history("plots", "show", cwd="plots")
    page = history.root / "plots" / "pivot_plots" / "index.html"
    assert f"Wrote 2 plot(s) to {page}" in done.stdout
    dom = rendered_dom(chromium, page)
    assert charts_drawn(dom) == 2 and marks(dom, "line mark") == 1 and marks(dom, "rect mark") == 4


def test_old_data_comes_from_the_remote_and_missing_data_is_named(
    history,
    chromium,  # noqa: F811
    tmp_path,
) -> None:
    root = tmp_path / "clone"
    shutil.copytree(history.root, root, symlinks=True)
    shutil.rmtree(root / ".pivot" / "cache")  # only `one` was pushed
    pivot = PivotCLI(root)
    done = pivot("plots", "diff", "HEAD~2", "HEAD~1", "-o", "out")
    assert "plots/loss.csv in HEAD~1: its data is neither in the local cache nor on the remote" in (
        done.stderr
    )
    html = (root / "out" / "index.html").read_text()
    assert "plots/loss.csv in HEAD~1: its data is neither in the local cache" in html
    dom = rendered_dom(chromium, root / "out" / "index.html")
    assert charts_drawn(dom) == 2 and marks(dom, "line mark") == 1  # HEAD~2's, fetched
    fetched = list((root / ".pivot" / "cache").rglob("*"))
    assert fetched, "the blobs of HEAD~2 were fetched into the cache"


def test_missing_columns_bad_data_and_images_are_notes_in_the_page(
    project,
    pivot,
    chromium,  # noqa: F811
) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
    write_files(
        project,
        {
            "pipeline.py": f"""
                import base64
                from typing import Annotated, TypedDict
                import pivot

                pipeline = pivot.Pipeline("p")

                class Outs(TypedDict):
                    good: Annotated[list, pivot.Plot("good.jsonl", x="t", y="v", template="scatter")]
                    bars: Annotated[dict, pivot.Plot("bars.json", x="name", y="n", template="bar")]
                    wrong: Annotated[list, pivot.Plot("wrong.csv", x="epoch", y="acc")]
                    broken: Annotated[object, pivot.Plot("broken.json")]
                    picture: Annotated[bytes, pivot.Plot("picture.png")]

                def s() -> Outs:
                    import pathlib
                    pathlib.Path("broken.json").write_text("[1, 2")
                    return {{
                        "good": [{{"t": i, "v": i * i}} for i in range(5)],
                        "bars": {{"name": ["a", "b"], "n": [3, 4]}},
                        "wrong": [{{"step": 1, "loss": 2}}],
                        "broken": None,
                        "picture": base64.b64decode("{png}"),
                    }}

                pipeline.register(s)
            """
        },
    )
    pivot("run", "-q")
    done = pivot("plots", "show", "-o", "out")
    assert "Wrote 5 plot(s)" in done.stdout
    assert "wrong.csv in workspace has no column 'epoch' (columns: step, loss)" in done.stderr
    assert "The plot file broken.json in workspace is not valid JSON" in done.stderr
    html = (project / "out" / "index.html").read_text()
    assert "has no column &#x27;epoch&#x27;" in html and 'src="data:image/png;base64,' in html
    dom = rendered_dom(chromium, project / "out" / "index.html")
    assert charts_drawn(dom) == 2
    assert marks(dom, "point") == 5 and marks(dom, "bar") == 2


def test_the_page_is_not_written_into_dot_git_or_dot_pivot(project, pivot) -> None:
    err = pivot("plots", "show", "-o", ".pivot/x", rc=1).stderr
    assert "inside a .pivot folder" in err
    assert not (project / ".pivot" / "x").exists()
