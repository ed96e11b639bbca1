# my_project/analysis/pipeline.py
import pathlib
from typing import Annotated, TypedDict

import pivot

pipeline = pivot.Pipeline("analysis")


class AnalyzeOutputs(TypedDict):
    report: Annotated[pathlib.Path, pivot.Out("report.txt", pivot.loaders.PathOnly())]


def analyze(
    data: Annotated[pathlib.Path, pivot.Dep("../shared/data.csv", pivot.loaders.PathOnly())],
) -> AnalyzeOutputs:
    content = data.read_text()
    lines = len(content.strip().split("\n")) - 1
    out = pathlib.Path("report.txt")
    out.write_text(f"Processed {lines} records\n")
    return AnalyzeOutputs(report=out)


pipeline.register(analyze)
