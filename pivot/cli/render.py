"""What the commands print: stage lines, the run summary and plan, the status table,
transfer summaries and the transfer progress bar."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from pivot.cli import console
from pivot.cli.run_text import COUNTED, json_text, run_document, stage_text, summary_text

if TYPE_CHECKING:
    from pivot.cache.gc import GcSummary
    from pivot.remote.gc import RemoteGcSummary
    from pivot.remote.transfer import TransferSummary
    from pivot.run.edited import EditedOutputs
    from pivot.run.plan import Decision
    from pivot.run.scheduler import RunReport, StageReport
    from pivot.services.elsewhere import Elsewhere

STATUS_STYLE = {
    "ran": ("ran", "green"),
    "skipped": ("skipped", None),
    "restored": ("restored", "cyan"),
    "failed": ("FAILED", "red"),
    "blocked": ("blocked", "yellow"),
    "cancelled": ("cancelled", "yellow"),
}


NOTED = ("restored", "blocked", "skipped", "cancelled")  # statuses whose line shows the detail


def stage_line(report: StageReport) -> None:
    """One line per settled stage, flushed at once (a run's live output)."""
    label, color = STATUS_STYLE[report.status]
    timing = f"{report.seconds:6.2f}s" if report.status in ("ran", "failed") else ""
    shows_detail = report.detail and report.status in NOTED
    note = f"  ({report.detail})" if shows_detail else ""
    if report.where:
        note = f"  (on {report.where})"
    if color is None:
        # Nothing to style or strip: written as is (`click.echo` costs more than the rest
        # of a skipped stage's line, and a no-op at scale prints thousands).
        sys.stdout.write(stage_text(f"{label:<9}", report.stage_id, timing, note) + "\n")
    else:
        styled = click.style(f"{label:<9}", fg=color)
        click.echo(stage_text(styled, report.stage_id, timing, note))
    sys.stdout.flush()


def plan(decisions: dict[str, Decision], edits: EditedOutputs) -> None:
    """`run --dry-run`: what each stage would do, and why."""
    verbs = {"run": "would run", "pending": "would run", "restore": "would restore"}
    verbs["waits"] = "waits"
    for row in plan_rows(decisions, edits):
        label = verbs.get(row["action"], "up to date")
        reasons = [row["kept"]] if row.get("kept") else row["reasons"]
        why = f"  ({'; '.join(reasons)})" if reasons else ""
        click.echo(f"  {label:<14} {row['stage']}{why}")


def plan_rows(decisions: dict[str, Decision], edits: EditedOutputs) -> list[dict[str, Any]]:
    """`run --dry-run --json`: each stage's decision, as `status --json` rows."""
    from pivot.run.edited import annotate
    from pivot.run.plan import RESTORE, SKIP

    rows = []
    for d in decisions.values():
        kept = d.action == RESTORE and not d.materialize
        row = {
            "stage": d.stage.id,
            "action": SKIP if kept else d.action,
            "reasons": [] if kept else list(d.reasons),
        }
        if kept:
            row["kept"] = d.kept
        annotate(row, d, edits)
        rows.append(row)
    return rows


def run_json(report: RunReport, total: int, seconds: float) -> dict[str, Any]:
    """`run --json`: every settled stage, the counts of the summary line, the time."""
    rows = ((s.stage_id, s.status, s.seconds, s.detail) for s in report.stages)
    return run_document(rows, total, seconds)


def run_summary(report: RunReport, total: int, seconds: float) -> None:
    """The line that ends a run: how many stages ran, were restored, were up to date...
    `seconds` is the whole command's time, loading the pipelines included."""
    counts = {status: report.count(status) for status in COUNTED}
    click.echo(summary_text(total, len(report.stages), counts, seconds))


def status_table(rows: list[dict[str, Any]], quiet: bool = False) -> None:
    """`status`: a line per stage with its reasons (and where its outputs are); with
    `quiet`, the summary line only."""
    labels = {
        "skip": "up to date",
        "restore": "restorable",
        "run": "will run",
        "pending": "will run",
        "not-local": "not local",
        "waits": "waits",
    }
    colors = {
        "skip": None,
        "restore": "cyan",
        "run": "yellow",
        "pending": "yellow",
        "not-local": "magenta",
        "waits": "cyan",
    }
    for row in [] if quiet else rows:
        label = click.style(f"{labels[row['action']]:<11}", fg=colors[row["action"]])
        kept = f"  ({row['kept']})" if row.get("kept") else ""
        click.echo(f"  {label} {row['stage']:<40} {row['file']}{kept}")
        for reason in row["reasons"]:
            click.echo(f"      - {reason}")
        for path in row.get("missing", ()):
            click.echo(
                f"      (raw data? `pivot track {path}` where it exists, then commit the record)"
            )
        if row.get("not_local"):
            click.echo(
                "      (`pivot status --remote` reads the folder's manifest from the remote; "
                "`pivot fetch` keeps it)"
            )
        for path, where in row.get("outputs", {}).items():
            color = {"local": "green", "remote": "cyan", "missing": "red"}[where]
            click.echo(f"      {click.style(f'{where:<8}', fg=color)} {path}")
    stale = sum(1 for r in rows if r["action"] not in ("skip", "not-local"))
    unknown = sum(1 for r in rows if r["action"] == "not-local")
    stages = f"{len(rows)} stage{'s' * (len(rows) != 1)}"
    if unknown:
        click.echo(f"{stages}, {stale} not up to date, {unknown} not decidable offline.")
    else:
        click.echo(
            f"{stages}, {stale} not up to date."
            if stale
            else f"Every stage is up to date ({stages})."
        )


def stale_elsewhere(elsewhere: Elsewhere) -> None:
    """`status`: one line about stale stages in pipelines out of scope."""
    n, m = len(elsewhere.stages), len(elsewhere.pipelines)
    click.echo(
        f"{n} stage{'s' * (n != 1)} in {m} other pipeline{'s' * (m != 1)} "
        f"{'are' if n != 1 else 'is'} not up to date; pivot status --all"
    )


def tracked_changes(rows: list[dict[str, str]]) -> None:
    """`status`: tracked data whose workspace content differs from its record."""
    for row in rows:
        path = row["tracked"]
        if row["state"] == "modified":
            label = click.style(f"{'modified':<11}", fg="yellow")
            why = f"tracked data changed on disk: `pivot track {path}` records it"
        else:
            label = click.style(f"{'missing':<11}", fg="cyan")
            why = "tracked data not in the workspace: `pivot checkout` or `pivot pull` restores it"
        click.echo(f"  {label} {path}  ({why})")


def as_json(data: Any, sort_keys: bool = False) -> None:
    click.echo(json_text(data, sort_keys))


def transfer(summary: TransferSummary, json_output: bool, extra: dict | None = None) -> None:
    """A transfer's summary line, or its JSON (with `extra` fields)."""
    if json_output:
        data = summary.to_dict()
        data.update(extra or {})
        as_json(data, sort_keys=True)
    else:
        click.echo(summary.line())


def pushed_after_run(summary: TransferSummary) -> None:
    """`run --push`: the push's line, and a warning for blobs that could not be sent."""
    click.echo(summary.line())
    if summary.missing:
        console.warn(
            f"{len(summary.missing)} blob(s) are neither in the local cache nor on the remote "
            f"and were not pushed (first: {summary.missing[0][:16]})."
        )


def gc_line(summary: GcSummary, dry_run: bool) -> None:
    from pivot.remote.transfer import human_bytes

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


def remote_gc_line(summary: RemoteGcSummary, dry_run: bool) -> None:
    """`gc --remote`: what went (or would go) from the remote, and what was repacked."""
    from pivot.remote.transfer import human_bytes

    verb = "Would remove" if dry_run else "Removed"
    click.echo(
        f"{verb} {summary.packs_removed} pack(s) and {summary.indexes_removed} index(es) "
        f"holding {summary.blobs_removed} dead blob(s) ({human_bytes(summary.bytes_removed)}) "
        f"and {summary.runs_removed} run record(s) from {summary.remote}; "
        f"{'would repack' if dry_run else 'repacked'} {summary.blobs_repacked} live blob(s) "
        f"({human_bytes(summary.bytes_repacked)}) out of {summary.packs_repacked} pack(s); "
        f"kept {summary.packs_kept} pack(s), {summary.recent_kept} of them or other objects "
        f"younger than {summary.grace_hours:g} h."
    )
    if summary.raced:
        console.warn(
            "A push wrote to the remote while gc ran and needs what gc would have removed: "
            "nothing was deleted. Run `pivot gc --remote` again later."
        )


class Bar:
    """A small thread-safe progress bar on stderr, drawn only when stderr is a TTY."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
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
