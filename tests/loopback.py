"""Servers that run as processes of their own on 127.0.0.1 (SeaweedFS, Azurite): start one,
wait until it answers, stop it."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def server_process(
    name: str,
    cmd: list[str],
    log: pathlib.Path,
    probe: Callable[[], object],
    cwd: pathlib.Path | None = None,
    seconds: float = 60,
) -> Iterator[subprocess.Popen]:
    """Run `cmd` (listening on the loopback ports it was given, e.g. by `free_ports`), its
    output to `log`, until `probe()` returns without raising; stop it on exit (SIGTERM,
    SIGKILL 15 s later). Raises, quoting the end of the log, if it exits or does not answer
    within `seconds`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
        )
    try:
        deadline = time.monotonic() + seconds
        last: Exception | None = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{log.read_text()[-3000:]}")
            try:
                probe()
                break
            except Exception as exc:  # not up yet
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not answer in {seconds:.0f} s ({last}):\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
