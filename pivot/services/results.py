"""`metrics`, `params` and `plots`: values of the workspace and of git revisions.

The workspace side reads the metrics and plot files on disk and the params of the current
stage definitions; a revision's side reads its committed lock files with git plumbing
(metric values and params are in them), and plot data from the local cache or the remote.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pivot.cache.hashing import FILE
from pivot.cache.workspace import open_workspace
from pivot.define.metric_values import flatten_params, parse_metrics, read_metrics_file
from pivot.define.plot_data import parse_rows
from pivot.define.results import DATA_FORMATS, IMAGE_FORMATS, Metric, Plot
from pivot.discover.scope import resolve_scope
from pivot.errors import CorruptFile, DefinitionError, PivotError, UnsafePath
from pivot.results.compare import Row, side_by_side
from pivot.results.plots_page import Chart, Series, render_page, vega_bundle
from pivot.results.revisions import GitRepo, Revision
from pivot.run.lockfile import Lock, read_lock
from pivot.run.plan import lock_params

if TYPE_CHECKING:
    from pivot.cache.workspace import Workspace
    from pivot.define.stage import StageSpec

WORKSPACE = "workspace"
MAX_PLOT_BYTES = 64 << 20


@dataclass
class Compared:
    """Values side by side: one column per revision (a single one for `show`)."""

    revs: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


@dataclass
class Page:
    """A plots page written to disk: where, how many plots, what it could not show."""

    path: pathlib.Path
    plots: int
    notes: list[str]


@dataclass
class _Context:
    """The workspace, the stages in scope and, once needed, the git repository."""

    ws: Workspace
    stages: list[StageSpec]
    every: bool  # --all: every lock file of a revision, also of stages gone since
    repo: GitRepo | None = None

    def revision(self, name: str) -> Revision | None:
        """None for the workspace, else the resolved git revision."""
        if name == WORKSPACE:
            return None
        if self.repo is None:
            self.repo = GitRepo(self.ws.project.root)
        return self.repo.resolve(name)

    def locks(self, rev: Revision, notes: list[str]) -> dict[str, Lock]:
        """The lock files of the stages in scope committed in `rev` (all with --all)."""
        assert self.repo is not None
        if not rev.has_project:
            notes.append(
                f"{rev.name} ({rev.commit[:8]}) has no {self.repo.prefix}.pivot/ folder: it is "
                f"from before the project was initialised, so it has no values."
            )
            return {}
        locks = self.repo.locks(rev)
        if self.every:
            return locks
        wanted = {s.id for s in self.stages}
        return {sid: lock for sid, lock in locks.items() if sid in wanted}


def _context(targets: tuple[str, ...], all_pipelines: bool) -> _Context:
    ws = open_workspace()
    try:
        scope = resolve_scope(ws, targets, all_pipelines)
    except BaseException:
        ws.state.close()
        raise
    stages = [scope.graph.stages[sid] for sid in scope.graph.order()]
    return _Context(ws, stages, all_pipelines and not targets)


def _sides(revs: tuple[str, ...]) -> list[str]:
    """The two sides of a diff: A (default HEAD) and B (default the workspace)."""
    if len(revs) > 2:
        raise DefinitionError(f"Compare at most two revisions at once; got {', '.join(revs)}.")
    return [*revs, *(["HEAD", WORKSPACE][len(revs) :])]


# -- metrics --------------------------------------------------------------------------------


def metrics_show(targets: tuple[str, ...], all_pipelines: bool) -> Compared:
    """The metric values of the workspace."""
    return _compare_metrics(targets, all_pipelines, [WORKSPACE], unchanged=True)


def metrics_diff(revs: tuple[str, ...], all_pipelines: bool, unchanged: bool) -> Compared:
    """The metric values of two revisions (default: HEAD and the workspace)."""
    return _compare_metrics((), all_pipelines, _sides(revs), unchanged)


def _compare_metrics(
    targets: tuple[str, ...], all_pipelines: bool, names: list[str], unchanged: bool
) -> Compared:
    ctx = _context(targets, all_pipelines)
    try:
        notes: list[str] = []
        tables = [_metrics_of(ctx, name, notes) for name in names]
    finally:
        ctx.ws.state.close()
    return Compared(names, side_by_side(tables, unchanged), notes)


def _metrics_of(ctx: _Context, name: str, notes: list[str]) -> dict[str, dict[str, Any]]:
    rev = ctx.revision(name)
    declared = [(s, a) for s in ctx.stages for a in s.outs if isinstance(a.mark, Metric)]
    table: dict[str, dict[str, Any]] = {}
    if rev is None:
        for stage, art in declared:
            try:
                table[art.path] = read_metrics_file(ctx.ws.project.root / art.path, art.path)
            except FileNotFoundError:
                lock = read_lock(ctx.ws.project.stages_dir, stage.id)
                if lock is not None and art.path in lock.metrics:
                    table[art.path] = lock.metrics[art.path]
                else:
                    notes.append(f"{art.path} is not in the workspace: run {stage.id}.")
            except IsADirectoryError:
                raise CorruptFile(
                    f"The metrics file {art.path} is a folder.", path=art.path
                ) from None
        return table
    locks = ctx.locks(rev, notes)
    for lock in locks.values():
        table.update(lock.metrics)
    for stage, art in declared:  # lock files written before Pivot recorded values
        lock = locks.get(stage.id)
        out = lock.outs.get(art.path) if lock is not None else None
        if out is None or art.path in table or out["kind"] != FILE:
            continue
        try:
            table[art.path] = parse_metrics(ctx.ws.cache.read_bytes(out["hash"]), art.path)
        except (FileNotFoundError, PivotError):
            notes.append(
                f"{art.path} in {name}: its lock file records no values and the local cache "
                f"lacks the file."
            )
    return table


# -- params ---------------------------------------------------------------------------------


def params_show(targets: tuple[str, ...], all_pipelines: bool) -> Compared:
    """The params of the stages as currently defined."""
    return _compare_params(targets, all_pipelines, [WORKSPACE], unchanged=True)


def params_diff(revs: tuple[str, ...], all_pipelines: bool, unchanged: bool) -> Compared:
    """The params of two revisions (default: HEAD's lock files and the current definitions)."""
    return _compare_params((), all_pipelines, _sides(revs), unchanged)


def _compare_params(
    targets: tuple[str, ...], all_pipelines: bool, names: list[str], unchanged: bool
) -> Compared:
    ctx = _context(targets, all_pipelines)
    try:
        notes: list[str] = []
        tables = []
        for name in names:
            rev = ctx.revision(name)
            if rev is None:
                tables.append({s.id: flatten_params(lock_params(s)) for s in ctx.stages})
            else:
                locks = ctx.locks(rev, notes)
                tables.append({sid: flatten_params(lock.params) for sid, lock in locks.items()})
    finally:
        ctx.ws.state.close()
    return Compared(names, side_by_side(tables, unchanged), notes)


# -- plots ----------------------------------------------------------------------------------


def plots_show(targets: tuple[str, ...], all_pipelines: bool, out_dir: pathlib.Path) -> Page:
    """The plots of the workspace as one HTML page in `out_dir`."""
    return _plots(targets, all_pipelines, [WORKSPACE], out_dir)


def plots_diff(revs: tuple[str, ...], all_pipelines: bool, out_dir: pathlib.Path) -> Page:
    """The plots of several revisions, one series each (with fewer than two named, the
    workspace too; none named: HEAD and the workspace)."""
    names = list(dict.fromkeys(revs))
    if len(names) < 2:
        names = _sides(tuple(names))
    return _plots((), all_pipelines, names, out_dir)


def _plots(
    targets: tuple[str, ...], all_pipelines: bool, names: list[str], out_dir: pathlib.Path
) -> Page:
    out_dir = _output_dir(out_dir)
    ctx = _context(targets, all_pipelines)
    try:
        notes: list[str] = []
        declared = [(s, a) for s in ctx.stages for a in s.outs if isinstance(a.mark, Plot)]
        charts = {a.path: Chart(a.path, a.mark.settings()) for _, a in declared}
        pending: list[tuple[Chart, str, dict[str, Any]]] = []
        for name in names:
            rev = ctx.revision(name)
            if rev is None:
                for _, art in declared:
                    _add_series(charts[art.path], name, _workspace_file(ctx, art.path))
                continue
            locks = ctx.locks(rev, notes)
            for stage, art in declared:
                lock = locks.get(stage.id)
                out = lock.outs.get(art.path) if lock is not None else None
                if out is None:
                    charts[art.path].notes.append(f"{art.path} is not in {name}.")
                elif out["kind"] != FILE:
                    charts[art.path].notes.append(f"{art.path} in {name} is a folder.")
                else:
                    pending.append((charts[art.path], name, out))
        _fetch_missing(ctx.ws, [out for _, _, out in pending], notes)
        for chart, name, out in pending:
            _add_series(chart, name, _cached(ctx.ws, out, chart.path, name))
        title = "Plots" if names == [WORKSPACE] else f"Plots: {' vs '.join(names)}"
        bundle = vega_bundle(ctx.ws.project.tmp_dir)
        page = render_page(title, list(charts.values()), names, notes, bundle)
    finally:
        ctx.ws.state.close()
    from pivot import _fs

    target = out_dir / "index.html"
    _fs.write_bytes(target, page.encode(), mode=0o644)
    every_note = notes + [n for c in charts.values() for n in c.notes]
    return Page(target, len(charts), every_note)


def _output_dir(out_dir: pathlib.Path) -> pathlib.Path:
    """`out_dir` made absolute; refused if inside a `.git` or `.pivot` folder."""
    resolved = out_dir.resolve()
    for part in resolved.parts:
        if part in (".git", ".pivot"):
            raise UnsafePath(
                f"Refusing to write the plots page into {out_dir}: it is inside a {part} "
                f"folder. Name another folder with -o.",
                path=out_dir,
            )
    return resolved


def _workspace_file(ctx: _Context, path: str) -> tuple[bytes | None, str]:
    file = ctx.ws.project.root / path
    try:
        if file.stat().st_size > MAX_PLOT_BYTES:
            return None, f"{path} is larger than {MAX_PLOT_BYTES >> 20} MiB; not drawn."
        return file.read_bytes(), ""
    except FileNotFoundError:
        return None, f"{path} is not in the workspace."
    except IsADirectoryError:
        return None, f"{path} is a folder."


def _fetch_missing(ws: Workspace, outs: list[dict[str, Any]], notes: list[str]) -> None:
    """Fetch from the remote the plot files the local cache lacks (only those blobs)."""
    from pivot.run.remote_view import RemoteAccess

    missing = list(dict.fromkeys(o["hash"] for o in outs if not ws.cache.has(o["hash"])))
    if not missing:
        return
    access = RemoteAccess(ws.project, None)
    try:
        if not access.is_configured():
            return
        from pivot.remote.transfer import fetch_outputs

        fetch_outputs(ws.project, access.remote, [(d, FILE) for d in missing])
    except PivotError as exc:
        notes.append(f"The data of older revisions could not be fetched: {exc}")


def _cached(ws: Workspace, out: dict[str, Any], path: str, rev: str) -> tuple[bytes | None, str]:
    if out["size"] > MAX_PLOT_BYTES:
        return None, f"{path} in {rev} is larger than {MAX_PLOT_BYTES >> 20} MiB; not drawn."
    try:
        return ws.cache.read_bytes(out["hash"]), ""
    except FileNotFoundError:
        return None, (
            f"{path} in {rev}: its data is neither in the local cache nor on the remote "
            f"(was it pushed?)."
        )
    except PivotError as exc:
        return None, f"{path} in {rev}: {exc}"


def _add_series(chart: Chart, rev: str, found: tuple[bytes | None, str]) -> None:
    data, problem = found
    if data is None:
        chart.notes.append(problem)
        return
    suffix = pathlib.PurePosixPath(chart.path).suffix.lower()
    if suffix in IMAGE_FORMATS:
        chart.series.append(Series(rev, image=data, mime=IMAGE_FORMATS[suffix]))
        return
    try:
        rows = parse_rows(data, DATA_FORMATS[suffix], f"{chart.path} in {rev}")
    except PivotError as exc:
        chart.notes.append(str(exc))
        return
    chart.series.append(Series(rev, rows=rows))
