"""Loading one pipeline file (pipeline.py or pivot.yaml) into resolved stage specs."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from pivot.define.pipeline import Pipeline, Registration
from pivot.define.stage import Artifact, StageSpec
from pivot.errors import DefinitionError, PivotError
from pivot.project import Project, safe_relpath

PIPELINE_PY = "pipeline.py"
PIVOT_YAML = "pivot.yaml"
PIPELINE_FILES = (PIPELINE_PY, PIVOT_YAML)
YAML_PIPELINE_KEYS = {"name", "stages"}
YAML_STAGE_KEYS = {"python", "deps", "outs", "params"}


@dataclass
class LoadedPipeline:
    """A pipeline file after import: its name, folder and stages by name, and the project
    modules (files) its import imported."""

    name: str
    file: pathlib.Path
    directory: pathlib.Path
    stages: dict[str, StageSpec]
    modules: frozenset[str] = frozenset()


def pipeline_file_in(directory: pathlib.Path) -> pathlib.Path | None:
    """The pipeline file of a directory, refusing a directory that has both kinds."""
    found = [directory / n for n in PIPELINE_FILES if (directory / n).is_file()]
    if len(found) > 1:
        raise DefinitionError(
            f"{directory} holds both {PIPELINE_PY} and {PIVOT_YAML}; a directory defines one "
            f"pipeline. Merge them into one file."
        )
    return found[0] if found else None


@contextlib.contextmanager
def pipeline_context(directory: pathlib.Path, root: pathlib.Path, imported: set[str] | None = None):
    """Run code in `directory` with it, then the project root, first on sys.path (so a
    pipeline imports its own modules, then the project's packages); forget project modules
    it imported (adding their files to `imported`)."""
    cwd, path = os.getcwd(), list(sys.path)
    before = set(sys.modules)
    os.chdir(directory)
    sys.path[:0] = list(dict.fromkeys([str(directory), str(root)]))
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for name in set(sys.modules) - before:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(str(root)) and not name.startswith("_pivot_pipeline_"):
                if imported is not None:
                    imported.add(module_file)
                del sys.modules[name]


def _module_name(project: Project, file: pathlib.Path) -> str:
    return "_pivot_pipeline_" + re.sub(r"\W", "_", project.rel(file))


def _user_error(file: pathlib.Path, exc: BaseException) -> PivotError:
    """A one-paragraph error pointing at the line of `file` (or its helper) that failed."""
    if isinstance(exc, PivotError):
        return exc.reworded(f"{file}: {exc}")
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}"
        return DefinitionError(
            f"Cannot load pipeline {file}: syntax error in {where}: {exc.msg}. Fix the file "
            f"and run again.",
            path=file,
        )
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    last = frames[-1] if frames else None
    where = f"{last.filename}, line {last.lineno}" if last else str(file)
    return DefinitionError(
        f"Cannot load pipeline {file}: {type(exc).__name__}: {exc} (raised at {where}). "
        f"Fix the error and run again.",
        path=file,
        hint="verbose",
    )


def load_file(project: Project, file: pathlib.Path) -> LoadedPipeline:
    """Import a pipeline file and resolve its stages' paths against the project."""
    directory = file.parent
    imported: set[str] = set()
    with pipeline_context(directory, project.root, imported):
        try:
            is_yaml = file.name == PIVOT_YAML
            pipeline = _load_yaml(file) if is_yaml else _load_py(project, file)
        except Exception as exc:
            raise _user_error(file, exc) from exc
    stages = {
        reg.name: _resolve(project, pipeline.name, file, directory, reg)
        for reg in pipeline.registrations.values()
    }
    return LoadedPipeline(pipeline.name, file, directory, stages, frozenset(imported))


def _load_py(project: Project, file: pathlib.Path) -> Pipeline:
    name = _module_name(project, file)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    pipelines = [v for v in vars(module).values() if isinstance(v, Pipeline)]
    if len(pipelines) != 1:
        raise DefinitionError(
            f"{file} must create exactly one pivot.Pipeline at module level; found "
            f"{len(pipelines)}."
        )
    pipelines[0].directory = file.parent
    return pipelines[0]


def _load_yaml(file: pathlib.Path) -> Pipeline:
    import yaml

    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict):
        raise DefinitionError(f"{file} must be a mapping with `stages:`.")
    _check_keys(raw, YAML_PIPELINE_KEYS, f"{file}")
    pipeline = Pipeline(str(raw.get("name") or file.parent.name), directory=file.parent)
    stages = raw.get("stages") or {}
    if not isinstance(stages, dict):
        raise DefinitionError(f"{file}: `stages` must map stage names to their settings.")
    for stage_name, body in stages.items():
        where = f"stage {stage_name!r} in {file}"
        if not isinstance(body, dict) or "python" not in body:
            raise DefinitionError(f"{where} needs a `python: module.function` entry.")
        _check_keys(body, YAML_STAGE_KEYS, where)
        func = _import_function(str(body["python"]), where)
        outs = body.get("outs")
        if isinstance(outs, str):
            outs = {"": outs}
        pipeline.register(
            func,
            name=str(stage_name),
            params=body.get("params"),
            deps=body.get("deps"),
            outs=outs,
        )
    return pipeline


def check_not_pipeline(out: str, pipeline_file: str, what: str) -> None:
    """Refuse an output that is the pipeline file `pipeline_file` or one of its folders:
    a stage removes its outputs before it runs, and would take the pipeline with them."""
    if out == pipeline_file or pipeline_file.startswith(out + "/"):
        kind = "file" if out == pipeline_file else "folder"
        raise DefinitionError(
            f"{what} ({out} in the project) is the {kind} of the pipeline {pipeline_file}; a "
            f"stage removes its outputs before it runs, which would delete the pipeline and "
            f"everything else there. Name a file or folder of its own (such as 'out/')."
        )


def _check_keys(raw: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DefinitionError(
            f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known keys are "
            f"{', '.join(sorted(known))}."
        )


def _import_function(dotted: str, where: str) -> Any:
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise DefinitionError(f"{where}: `python: {dotted}` must be `module.function`.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DefinitionError(f"{where}: cannot import module {module_name!r} ({exc}).") from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise DefinitionError(f"{where}: module {module_name!r} has no function {attr!r}.")
    return func


def _resolve(
    project: Project, pipeline: str, file: pathlib.Path, directory: pathlib.Path, reg: Registration
) -> StageSpec:
    where = f"stage {pipeline}/{reg.name} ({file})"

    def artifact(key: str, declared: str, loader: Any) -> Artifact:
        try:
            rel = project.rel(declared, base=directory)
        except PivotError as exc:
            raise exc.reworded(f"{where}: {exc}") from None
        safe_relpath(rel, f"the path {declared!r} of {where}")
        return Artifact(key, declared, rel, loader)

    deps = [artifact(k, d.path, d.loader) for k, d in reg.deps.items()]
    outs = [artifact(k, o.path, o.loader) for k, o in reg.outs.items()]
    for out in outs:
        check_not_pipeline(out.path, project.rel(file), f"{where}: its output {out.declared!r}")
    return StageSpec(
        pipeline=pipeline,
        name=reg.name,
        func=reg.func,
        source=file,
        workdir=directory,
        deps=deps,
        outs=outs,
        params=reg.params,
        single_out=reg.single_out,
    )
