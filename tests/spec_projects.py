"""The example projects of the multi-pipeline spec, file for file: a parent pipeline at the
root with a child in `analysis/`, and sibling pipelines under `pipelines/`."""

from __future__ import annotations

ROOT_PIPELINE = """
# my_project/pipeline.py
import pathlib
from typing import Annotated, TypedDict
import pivot
pipeline = pivot.Pipeline("data_prep")
class PrepareOutputs(TypedDict):
    data: Annotated[pathlib.Path, pivot.Out("shared/data.csv", pivot.loaders.PathOnly())]
def prepare() -> PrepareOutputs:
    out = pathlib.Path("shared/data.csv")
    out.parent.mkdir(exist_ok=True)
    out.write_text("id,value\\n1,100\\n2,200\\n3,300\\n")
    return PrepareOutputs(data=out)
pipeline.register(prepare)
"""

CHILD_PIPELINE = """
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
    lines = len(content.strip().split("\\n")) - 1
    out = pathlib.Path("report.txt")
    out.write_text(f"Processed {lines} records\\n")
    return AnalyzeOutputs(report=out)
pipeline.register(analyze)
"""

FEATURES_PIPELINE = """
# pipelines/features/pipeline.py
import pathlib
from typing import Annotated, TypedDict
import pivot
pipeline = pivot.Pipeline("features")
class FeatureOutputs(TypedDict):
    output: Annotated[pathlib.Path, pivot.Out("output.csv", pivot.loaders.PathOnly())]
def compute_features() -> FeatureOutputs:
    out = pathlib.Path("output.csv")
    out.write_text("feature,value\\nf1,10\\nf2,20\\n")
    return FeatureOutputs(output=out)
pipeline.register(compute_features)
"""

MODEL_PIPELINE = """
# pipelines/model/pipeline.py
import pathlib
from typing import Annotated, TypedDict
import pivot
pipeline = pivot.Pipeline("model")
class ModelOutputs(TypedDict):
    result: Annotated[pathlib.Path, pivot.Out("predictions.csv", pivot.loaders.PathOnly())]
def train_model(
    features: Annotated[pathlib.Path, pivot.Dep("../features/output.csv", pivot.loaders.PathOnly())],
) -> ModelOutputs:
    data = features.read_text()
    out = pathlib.Path("predictions.csv")
    out.write_text(f"# Model trained on features\\n{data}")
    return ModelOutputs(result=out)
pipeline.register(train_model)
"""

PARENT_CHILD = {"pipeline.py": ROOT_PIPELINE, "analysis/pipeline.py": CHILD_PIPELINE}
SIBLINGS = {
    "pipelines/features/pipeline.py": FEATURES_PIPELINE,
    "pipelines/model/pipeline.py": MODEL_PIPELINE,
}
