"""Loading one pipeline file (pipeline.py or pivot.yaml) into resolved stage specs."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import pathlib
import posixpath
import re
import sys
import traceback
import typing
from typing import Any, NamedTuple

from pivot.define.loaders import PathOnly
from pivot.define.pipeline import Pipeline, Registration, check_name, checked_resources
from pivot.define.stage import GLOB, LIST, PARAMS_ARG, Artifact, Dep, Out, StageSpec, is_glob
from pivot.discover.fresh_code import SourceHashLoader, install
from pivot.errors import DefinitionError, PivotError
from pivot.project import Project, safe_relpath

PIPELINE_PY = "pipeline.py"
PIVOT_YAML = "pivot.yaml"
PIPELINE_FILES = (PIPELINE_PY, PIVOT_YAML)
YAML_PIPELINE_KEYS = {"name", "stages"}
YAML_STAGE_KEYS = {"python", "deps", "outs", "params", "resources"}


class LoadedPipeline(NamedTuple):
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
    it imported (adding their files to `imported`). The project's modules load from
    bytecode only when it matches their source (`fresh_code`)."""
    install(str(root))
    cwd, path = os.getcwd(), list(sys.path)
    before = set(sys.modules)
    os.chdir(directory)
    sys.path[:0] = list(dict.fromkeys([str(directory), str(root)]))
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        inside = os.path.join(str(root), "")  # `/p/app/`: not the sibling `/p/app2`
        for name in set(sys.modules) - before:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(inside) and not name.startswith("_pivot_pipeline_"):
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
    file_rel = project.rel(file)
    folder = posixpath.dirname(file_rel)
    paths = DeclaredPaths(project, directory, f"{folder}/" if folder else "", file_rel)
    stages = {
        reg.name: _resolve(paths, pipeline.name, file, reg)
        for reg in pipeline.registrations.values()
    }
    return LoadedPipeline(pipeline.name, file, directory, stages, frozenset(imported))


def _load_py(project: Project, file: pathlib.Path) -> Pipeline:
    name = _module_name(project, file)
    spec = importlib.util.spec_from_file_location(
        name, file, loader=SourceHashLoader(name, str(file))
    )
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
    """A pivot.yaml as a Pipeline; every key and type is checked, errors name the line."""
    import yaml

    text = file.read_text()
    try:
        raw = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise DefinitionError(f"{file}{where}: not valid YAML ({problem}).") from None
    yaml_file = _YamlFile(file, lines)
    raw = {} if raw is None else raw
    yaml_file.check(raw, dict, (), "the file", "a mapping with `stages:`")
    _check_keys(yaml_file, raw, YAML_PIPELINE_KEYS, (), "the file")
    name = raw.get("name", file.parent.name)
    yaml_file.check(name, str, ("name",), "`name`", "a string")
    pipeline = Pipeline(name, directory=file.parent)
    stages = raw.get("stages") or {}
    yaml_file.check(stages, dict, ("stages",), "`stages`", "a mapping of stage names")
    for stage_name, body in stages.items():
        at = ("stages", stage_name)
        what = f"stage {stage_name!r}"
        yaml_file.check(body, dict, at, what, "a mapping with a `python: module.function`")
        _check_keys(yaml_file, body, YAML_STAGE_KEYS, at, what)
        if "python" not in body:
            raise DefinitionError(
                f"{yaml_file.where(at)}: {what} needs a `python: module.function`."
            )
        dotted = body["python"]
        yaml_file.check(dotted, str, (*at, "python"), f"`python` of {what}", "module.function")
        deps = body.get("deps") or {}
        yaml_file.check_paths(deps, (*at, "deps"), f"`deps` of {what}", single=False)
        outs = body.get("outs") or {}
        yaml_file.check_paths(outs, (*at, "outs"), f"`outs` of {what}", single=True)
        params = body.get("params")
        if params is not None:
            yaml_file.check(params, dict, (*at, "params"), f"`params` of {what}", "a mapping")
        resources = body.get("resources")
        if resources is not None:
            yaml_file.check(
                resources, dict, (*at, "resources"), f"`resources` of {what}", "a mapping"
            )
        where = f"{yaml_file.where(at)}: {what}"
        resources = checked_resources(resources, where)
        func = _import_function(dotted, where)
        if isinstance(outs, str):
            outs = {"": outs}
        if has_markers(func):
            pipeline.register(
                func,
                name=str(stage_name),
                params=params,
                deps=deps,
                outs=outs,
                resources=resources,
            )
        else:
            _register_plain(pipeline, func, str(stage_name), params, deps, outs, where, resources)
    return pipeline


class _YamlFile:
    """A pivot.yaml being checked: the line of every key, for error messages."""

    def __init__(self, file: pathlib.Path, lines: dict[tuple, int]) -> None:
        self.file = file
        self.lines = lines

    def where(self, at: tuple) -> str:
        line = self.lines.get(at)
        return f"{self.file}, line {line}" if line else str(self.file)

    def check(self, value: Any, kind: type, at: tuple, what: str, expected: str) -> None:
        if not isinstance(value, kind):
            raise DefinitionError(
                f"{self.where(at)}: {what} must be {expected}, not {_yaml_kind(value)} ({value!r})."
            )

    def check_paths(self, value: Any, at: tuple, what: str, single: bool) -> None:
        """`deps`/`outs`: a mapping of argument (or output) names to paths; `outs` may
        also be one path."""
        if single and isinstance(value, str):
            return
        expected = "a mapping of names to paths" + (" or one path" if single else "")
        self.check(value, dict, at, what, expected)
        for key, path in value.items():
            self.check(key, str, (*at, key), f"the key {key!r} of {what}", "a name")
            self.check(path, str, (*at, key), f"{key!r} in {what}", "a path")


def _key_lines(node: Any, at: tuple = ()) -> dict[tuple, int]:
    """The 1-based line of every mapping key of a composed YAML document, by key path."""
    import yaml

    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*at, key)] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, (*at, key)))
    return lines


def _yaml_kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "empty"
    return names.get(type(value), f"a {type(value).__name__}")


def has_markers(func: Any) -> bool:
    """Whether a function declares any pivot.Dep or pivot.Out in its annotations."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:
        return True  # let the annotated path report what is wrong with them
    ret = hints.get("return")
    if ret is not None and typing.is_typeddict(ret):
        hints = {**hints, **typing.get_type_hints(ret, include_extras=True)}
    return any(
        isinstance(meta, Dep | Out)
        for hint in hints.values()
        if typing.get_origin(hint) is typing.Annotated
        for meta in hint.__metadata__
    )


def _register_plain(
    pipeline: Pipeline,
    func: Any,
    name: str,
    params: Any,
    deps: dict[str, str],
    outs: dict[str, str],
    where: str,
    resources: dict[str, float | str],
) -> None:
    """A plain function named in a pivot.yaml: each dep and out is passed by its key as a
    path (as `PathOnly` does), and the function writes its outs itself."""
    check_name(name, f"stage name in pipeline {pipeline.name!r}")
    if "" in outs:
        raise DefinitionError(
            f"{where}: `python: {func.__qualname__}` is a plain function (no pivot.Out "
            f"annotation), so its `outs` must name each output as an argument: "
            f"`outs: {{model: model.pkl}}`, received as `model`."
        )
    both = sorted(set(deps) & set(outs))
    if both:
        raise DefinitionError(f"{where}: {', '.join(both)} is both in `deps` and in `outs`.")
    signature = inspect.signature(func)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    wanted = {*deps, *outs, *([PARAMS_ARG] if params is not None else [])}
    unknown = sorted(wanted - set(signature.parameters)) if not takes_any else []
    missing = sorted(
        n
        for n, p in signature.parameters.items()
        if n not in wanted
        and p.default is p.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )
    if unknown or missing:
        problems = [f"it takes no argument {', '.join(unknown)}"] if unknown else []
        problems += [f"nothing gives its argument(s) {', '.join(missing)}"] if missing else []
        raise DefinitionError(
            f"{where}: {'; '.join(problems)}. Each key of `deps` and `outs` is passed as the "
            f"argument of that name ({PARAMS_ARG!r} gets `params`)."
        )
    if name in pipeline.registrations:
        raise DefinitionError(
            f"The pipeline {pipeline.name!r} registers two stages named {name!r}."
        )
    pipeline.registrations[name] = Registration(
        name,
        func,
        {k: Dep(p, PathOnly()) for k, p in deps.items()},
        {k: Out(p, PathOnly()) for k, p in outs.items()},
        False,
        params,
        outs_as_args=True,
        resources=resources,
    )


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


def _check_keys(yaml_file: _YamlFile, raw: dict, known: set[str], at: tuple, what: str) -> None:
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise DefinitionError(
            f"{yaml_file.where((*at, unknown[0]))}: unknown key {unknown[0]!r} in {what}; "
            f"known keys are {', '.join(sorted(known))}."
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


# A declared path of plain parts (no '.', '..', empty part or leading '/'): its project
# path is the pipeline folder's joined to it, with no normalisation to do.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


class DeclaredPaths(NamedTuple):
    """What resolving the paths of one pipeline file's stages needs: the project, the
    pipeline's folder (absolute, and as a project path prefix) and the file's project path."""

    project: Project
    directory: pathlib.Path
    prefix: str  # "" at the root, else "folder/"
    file_rel: str

    def rel(self, declared: str) -> str:
        if _PLAIN_PATH.fullmatch(declared):
            return self.prefix + declared
        return self.project.rel(declared, base=self.directory)


def _resolve(
    paths: DeclaredPaths, pipeline: str, file: pathlib.Path, reg: Registration
) -> StageSpec:
    where = f"stage {pipeline}/{reg.name} ({file})"
    directory = paths.directory

    def artifact(
        key: str, declared: str, loader: Any, group: str = "", mark: Any = None
    ) -> Artifact:
        try:
            rel = paths.rel(declared)
        except PivotError as exc:
            raise exc.reworded(f"{where}: {exc}") from None
        safe_relpath(rel, f"the path {declared!r} of {where}")
        return Artifact(key, declared, rel, loader, group, mark)

    deps = []
    for k, d in reg.deps.items():
        if isinstance(d.path, tuple):
            deps += [artifact(k, p, d.loader, LIST) for p in d.path]
        else:
            deps.append(artifact(k, d.path, d.loader, GLOB if is_glob(d.path) else ""))
    outs = [artifact(k, str(o.path), o.loader, mark=o) for k, o in reg.outs.items()]
    for out in outs:
        check_not_pipeline(out.path, paths.file_rel, f"{where}: its output {out.declared!r}")
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
        outs_as_args=reg.outs_as_args,
        resources=reg.resources,
    )
