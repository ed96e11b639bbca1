"""Click commands for remotes: `remote ...`, `push`, `fetch`, `pull`, `gc`.

Plain click objects; `pivot/cli/main.py` registers them with `cli.add_command(...)`.
Heavy imports (fsspec, boto3, zstandard) happen inside the commands only.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import click

from pivot.errors import PivotError

JOBS_HELP = "Parallel transfers (default: the remote's `jobs` option, else 8)."


def _project():
    from pivot.project import Project

    return Project.discover()


def _scope_locks(targets: tuple[str, ...], all_pipelines: bool):
    """The project and the lock files of the stages in scope (default: this pipeline and
    its upstreams; --all: every pipeline's stages), each recording exactly the outputs its
    stage declares (any other is named in a warning and left out)."""
    from pivot.cache.workspace import open_workspace
    from pivot.discover.scope import resolve_scope
    from pivot.run.lockfile import declared_locks

    ws = open_workspace()
    try:
        scope = resolve_scope(ws, targets, all_pipelines)
        stages = [scope.graph.stages[sid] for sid in scope.graph.order()]
        every = all_pipelines and not targets
        return ws.project, declared_locks(ws.project, stages, every)
    finally:
        ws.state.close()


def _open(project, name: str | None):
    from pivot.run.remote_view import open_configured

    return open_configured(project, name)


class _Bar:
    """A small thread-safe progress bar on stderr, drawn only when stderr is a TTY."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.blobs = self.total_blobs = self.nbytes = self.total_bytes = 0
        self.lock = threading.Lock()
        self.last = 0.0
        self.started = time.perf_counter()

    def add_total(self, blobs: int, nbytes: int) -> None:
        with self.lock:
            self.total_blobs += blobs
            self.total_bytes += nbytes
        self._draw(force=True)

    def advance(self, blobs: int, nbytes: int) -> None:
        with self.lock:
            self.blobs += blobs
            self.nbytes += nbytes
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        from pivot.remote.transfer import human_bytes

        now = time.perf_counter()
        with self.lock:
            if not force and now - self.last < 0.1:
                return
            self.last = now
            frac = self.nbytes / self.total_bytes if self.total_bytes else 0.0
            width = 30
            filled = int(frac * width)
            line = (
                f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.blobs}/{self.total_blobs} blobs "
                f"{human_bytes(self.nbytes)}/{human_bytes(self.total_bytes)}"
            )
        click.echo(line, nl=False, err=True)

    def close(self) -> None:
        if self.enabled and self.total_blobs:
            self._draw(force=True)
            click.echo("\r\033[K", nl=False, err=True)


def _report(summary, as_json: bool, extra: dict | None = None) -> None:
    if as_json:
        data = summary.to_dict()
        data.update(extra or {})
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(summary.line())


def _transfer_options(func):
    func = click.argument("targets", nargs=-1)(func)
    func = click.option(
        "-a", "--all", "all_pipelines", is_flag=True, help="Every stage of the project."
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")(func)
    func = click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help=JOBS_HELP)(
        func
    )
    return click.option("-r", "--remote", "remote_name", default=None, help="Remote name.")(func)


# ----------------------------------------------------------------------------- remote


@click.group("remote")
def remote() -> None:
    """Manage remotes (S3, local directories, any fsspec URL)."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("-d", "--default", "make_default", is_flag=True, help="Make it the default.")
@click.option("--local", is_flag=True, help="Write to .pivot/config.local.yaml (not committed).")
def remote_add(name: str, url: str, make_default: bool, local: bool) -> None:
    """Add remote NAME at URL (s3://bucket/prefix, /path, memory://..., ...)."""
    from pivot import config
    from pivot.urls import redact_url

    config.add_remote(_project(), name, url, default=make_default, local=local)
    suffix = " (default)" if make_default else ""
    click.echo(f"Added remote {name} -> {redact_url(url)}{suffix}")


@remote.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def remote_list(as_json: bool) -> None:
    """List the configured remotes (secrets hidden)."""
    from pivot import config
    from pivot.urls import redact_url

    rows = []
    for cfg, is_default in config.list_remotes(_project()):
        options = dict(sorted(cfg.options.items()))
        for key in config.SECRET_KEYS & set(options):
            options[key] = "***"
        for key in set(config.URL_KEYS) & set(options):
            options[key] = redact_url(str(options[key]))
        rows.append(
            {"name": cfg.name, "url": redact_url(cfg.url), "default": is_default, **options}
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No remotes. Add one with `pivot remote add NAME URL`.")
    for row in rows:
        mark = "*" if row["default"] else " "
        extras = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("name", "url", "default"))
        click.echo(f"{mark} {row['name']}\t{row['url']}" + (f"\t{extras}" if extras else ""))


@remote.command("remove")
@click.argument("name")
def remote_remove(name: str) -> None:
    """Remove remote NAME (from both config files)."""
    from pivot import config

    config.remove_remote(_project(), name)
    click.echo(f"Removed remote {name}")


@remote.command("default")
@click.argument("name")
@click.option("--local", is_flag=True, help="Write to .pivot/config.local.yaml.")
def remote_default(name: str, local: bool) -> None:
    """Make NAME the default remote."""
    from pivot import config

    config.set_default_remote(_project(), name, local=local)
    click.echo(f"Default remote: {name}")


@remote.command("modify")
@click.argument("name")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--local", is_flag=True, help="Write to .pivot/config.local.yaml (for secrets).")
@click.option("--unset", is_flag=True, help="Remove KEY instead of setting it.")
def remote_modify(name: str, key: str, value: str | None, local: bool, unset: bool) -> None:
    """Set option KEY of remote NAME (url, endpoint_url, region, profile, jobs, ...)."""
    from pivot import config

    if value is None and not unset:
        raise PivotError(f"Give a value for {key}, or pass --unset to remove it.")
    config.modify_remote(_project(), name, key, value, local=local, unset=unset)
    shown = "***" if key in config.SECRET_KEYS else value
    click.echo(f"Unset {name}.{key}" if unset else f"Set {name}.{key} = {shown}")


@remote.command("clean")
@click.argument("name", required=False)
@click.option(
    "--older-than",
    "hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Only uploads begun at least this many hours ago (a push may still be running).",
)
def remote_clean(name: str | None, hours: float) -> None:
    """Abort the unfinished uploads that killed pushes left on remote NAME (default: the
    default remote): S3 multipart uploads, or a local remote's temp files."""
    target = _open(_project(), name)
    count = target.clean_uploads(hours * 3600)
    click.echo(f"Aborted {count} unfinished upload(s) older than {hours:g} h on {target.display}.")


# ----------------------------------------------------------------------------- transfers


@click.command("push", short_help="Send outputs and run records to the remote.")
@_transfer_options
def push(remote_name, jobs, as_json, all_pipelines, targets) -> None:
    """Send the outputs and run records of this pipeline and its upstreams (or TARGETS, or
    --all: every pipeline's, and every local run record) to the remote."""
    from pivot.cache.runs import RunRecords
    from pivot.remote import transfer

    project, locks = _scope_locks(targets, all_pipelines)
    target = _open(project, remote_name)
    run_keys = RunRecords(project.cache_dir).keys() if all_pipelines else []
    bar = _Bar("push")
    try:
        summary = transfer.push_locks(project, target, locks, run_keys, jobs, bar)
    finally:
        bar.close()
    _report(summary, as_json)
    if summary.missing:
        raise PivotError(
            f"{len(summary.missing)} blob(s) named by lock files are neither in the local cache "
            f"nor on {target.display} (first: {summary.missing[0][:16]}); everything else was "
            f"pushed. Run `pivot run` (or `pivot pull` on the machine that has them) and push "
            f"again."
        )


@click.command("fetch", short_help="Download outputs into the local cache.")
@_transfer_options
def fetch(remote_name, jobs, as_json, all_pipelines, targets) -> None:
    """Download the outputs of this pipeline and its upstreams (or TARGETS, or --all) into
    the local cache."""
    from pivot.remote import transfer

    project, locks = _scope_locks(targets, all_pipelines)
    target = _open(project, remote_name)
    bar = _Bar("fetch")
    try:
        with project.exclusive("fetch"):
            summary = transfer.fetch_locks(project, target, locks, jobs, bar)
    finally:
        bar.close()
    _report(summary, as_json)
    if summary.missing:
        raise PivotError(
            f"{len(summary.missing)} blob(s) are not on remote {target.display} "
            f"(first: {summary.missing[0]}). Push them from a machine that has them."
        )


@click.command("pull", short_help="Fetch outputs and check them out.")
@_transfer_options
def pull(remote_name, jobs, as_json, all_pipelines, targets) -> None:
    """Fetch, then check out the outputs of this pipeline and its upstreams (or TARGETS, or
    --all) into the workspace."""
    from pivot.remote import transfer
    from pivot.run.lockfile import check_disjoint

    project, locks = _scope_locks(targets, all_pipelines)
    check_disjoint(locks)
    target = _open(project, remote_name)
    bar = _Bar("pull")
    try:
        with project.exclusive("pull"):
            result = transfer.pull_locks(project, target, locks, jobs, bar)
    finally:
        bar.close()
    extra = {"checked_out": result.checked_out, "incomplete": result.incomplete}
    _report(result.summary, as_json, extra)
    if result.incomplete:
        raise PivotError(
            f"{len(result.incomplete)} output(s) could not be checked out because the remote "
            f"{target.display} lacks some of their blobs: {', '.join(result.incomplete[:5])}"
            f"{' ...' if len(result.incomplete) > 5 else ''}. Push them from a machine that "
            f"has them."
        )


@click.command("gc")
@click.option("-n", "--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def gc(dry_run: bool, as_json: bool) -> None:
    """Remove cache objects and run records no lock file references."""
    from pivot.cache.gc import collect_garbage
    from pivot.remote.transfer import human_bytes
    from pivot.run.lockfile import live, load_locks

    project = _project()
    with project.exclusive("gc", sweep=False):  # gc removes and counts the temp files
        summary = collect_garbage(project, *live(load_locks(project)), dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
        return
    verb = "Would remove" if dry_run else "Removed"
    click.echo(
        f"{verb} {summary.objects_removed} object(s) ({human_bytes(summary.bytes_removed)}) "
        f"and {summary.runs_removed} run record(s); kept {summary.objects_kept} object(s) "
        f"and {summary.runs_kept} run record(s)."
        + (
            f" {verb} {summary.leftovers_removed} leftover temp or quarantined file(s)."
            if summary.leftovers_removed
            else ""
        )
    )


COMMANDS = (remote, push, fetch, pull, gc)
