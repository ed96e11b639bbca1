"""The `pivot` program: a `pivot run` that repeats a remembered no-op is answered from
the verdict memo before click and the command modules load (`services.noop_replay`);
every other command line goes to the click group (`cli.main`)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pivot.services.noop_replay import Replayed

STARTED = time.perf_counter()  # as the command line is read: a summary's time counts loading


def main() -> None:
    """Entry point of `pivot` and `python -m pivot`."""
    from pivot.cache import prestat

    prestat.start(sys.argv)  # first: its helpers work while the command imports and plans
    if prestat.runs_stages(sys.argv):
        from pivot._gcpause import collector_paused

        try:
            with collector_paused():  # what it imports and loads lives until the process exits
                from pivot.services import noop_replay

                replayed = noop_replay.attempt(sys.argv)
            if replayed is not None:
                _print(replayed)
                return
        except (Exception, KeyboardInterrupt) as exc:  # shown as the full command shows it
            from pivot.cli.main import fail

            fail(exc, STARTED)
    from pivot.cli.main import main as click_main

    click_main()


def _print(replayed: Replayed) -> None:
    """What the full command prints for the same no-op."""
    import gc
    import os

    from pivot.cli import run_text

    total = len(replayed.stage_ids)
    seconds = time.perf_counter() - STARTED
    if replayed.view == "json":
        stages = [(sid, "skipped", 0.0, "") for sid in replayed.stage_ids]
        text = run_text.json_text(run_text.run_document(stages, total, seconds))
    else:
        lines = []
        if replayed.view == "lines":
            label = f"{'skipped':<9}"
            lines = [run_text.stage_text(label, sid, "", "") for sid in replayed.stage_ids]
        lines.append(run_text.summary_text(total, total, {"skipped": total}, seconds))
        text = "\n".join(lines)
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (`pivot run | head`): no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    gc.freeze()  # as `cli.main`: the process exits next
