"""A real headless Chromium (Debian's `chromium`), installed once when missing, that
loads a page from disk with networking off and returns the DOM after its scripts ran."""

from __future__ import annotations

import fcntl
import pathlib
import re
import shutil
import subprocess
import tempfile

import pytest

OFFLINE = [
    "--proxy-server=127.0.0.1:9",  # nothing listens there: any request fails
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",  # let the page's scripts finish drawing
    *OFFLINE,
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; `apt-get install chromium` first when it is missing (one
    installer at a time across test workers)."""
    with open(pathlib.Path(tempfile.gettempdir()) / "pivot-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shutil.which("chromium") is None:
            env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env,
                capture_output=True,
            )  # fmt: skip
    found = shutil.which("chromium")
    assert found is not None, "chromium is not installed and apt-get could not install it"
    return found


def _run(chromium: str, page: pathlib.Path, *args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="pivot-chromium-") as profile:
        proc = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rendered_dom(chromium: str, page: pathlib.Path) -> str:
    """The page's DOM once loaded offline and its scripts ran."""
    return _run(chromium, page, "--dump-dom")


def screenshot(chromium: str, page: pathlib.Path, png: pathlib.Path, size: str) -> None:
    _run(chromium, page, f"--screenshot={png.resolve()}", f"--window-size={size}")


def count(dom: str, pattern: str) -> int:
    return len(re.findall(pattern, dom))


def charts_drawn(dom: str) -> int:
    return count(dom, r'data-rendered="true"')


def marks(dom: str, role: str) -> int:
    """How many marks the page's SVG charts hold with the ARIA role description `role`
    (Vega's: "line mark", "rect mark", "point", "bar")."""
    return count(dom, rf'aria-roledescription="{role}"')
