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
    out.write_text("id,value\n1,100\n2,200\n3,300\n")
    return PrepareOutputs(data=out)


pipeline.register(prepare)
