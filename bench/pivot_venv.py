"""The Pivot the benchmarks time: the checkout installed as users install it.

    python3 bench/pivot_venv.py    # create or refresh bench/work/pivot-venv (setup.sh runs it)

A development venv holds Pivot as an editable install, whose `.pth` import hook runs at every
interpreter start-up (and imports pathlib, importlib.util, fnmatch and urllib.parse for it);
no user pays that, and DVC is timed as installed from wheels. So bench/work/pivot-venv gets
the checkout installed non-editable (`pip install '.[s3]'`: S3 for the remote sections), and
records which source it was built from in `pivot-venv/pivot-source`: the commit, plus a digest
of any uncommitted change under pivot/ and in pyproject.toml. `run_bench.py` times that venv's
`pivot` when it exists, after `ensure` reinstalled it if the checkout's source differs, so a
benchmark never times older code than the checkout's.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

BENCH_DIR = pathlib.Path(__file__).resolve().parent
CHECKOUT = BENCH_DIR.parent
VENV = BENCH_DIR / "work" / "pivot-venv"
STAMP = VENV / "pivot-source"
SOURCES = ("pivot", "pyproject.toml")  # what the installed package is built from


def pivot_script(venv: pathlib.Path = VENV) -> pathlib.Path:
    return venv / "bin" / "pivot"


def source_id() -> str:
    """The commit of the checkout, with a digest of the uncommitted changes (tracked and
    untracked) to what the package is built from, if any."""
    git = ["git", "-C", str(CHECKOUT)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    diff = subprocess.run(
        [*git, "diff", "--binary", "HEAD", "--", *SOURCES], capture_output=True, check=True
    ).stdout
    untracked = subprocess.run(
        [*git, "ls-files", "--others", "--exclude-standard", "-z", "--", *SOURCES],
        capture_output=True,
        check=True,
    ).stdout
    if not diff and not untracked:
        return head.stdout.strip()
    digest = hashlib.sha256(diff)
    for name in sorted(filter(None, untracked.split(b"\0"))):
        digest.update(name + b"\0" + (CHECKOUT / os.fsdecode(name)).read_bytes())
    return f"{head.stdout.strip()}+uncommitted-{digest.hexdigest()[:12]}"


def installed_id(venv: pathlib.Path = VENV) -> str | None:
    """The source id recorded when `venv` was last installed, or None."""
    try:
        return (venv / STAMP.name).read_text().strip() or None
    except OSError:
        return None


def install(python: str = sys.executable, venv: pathlib.Path = VENV) -> str:
    """Create `venv` if needed and (re)install the checkout into it, non-editable; return
    the source id it was built from."""
    wanted = source_id()
    if not (venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    (venv / STAMP.name).unlink(missing_ok=True)  # no stamp while the install is half done
    subprocess.run([*pip, f"{CHECKOUT}[s3]"], check=True)
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(CHECKOUT)], check=True)
    if source_id() != wanted:
        raise SystemExit("The checkout changed while it was being installed; run this again.")
    (venv / STAMP.name).write_text(wanted + "\n")
    return wanted


def ensure(venv: pathlib.Path = VENV) -> pathlib.Path | None:
    """`venv`'s `pivot` script, reinstalled first if the checkout's source differs from the
    installed one; None if there is no such venv (setup.sh not run)."""
    if not pivot_script(venv).exists():
        return None
    have, want = installed_id(venv), source_id()
    if have != want:
        print(
            f"{venv.name}: installed from {have or 'an unknown source'}, the checkout is "
            f"{want}: reinstalling",
            file=sys.stderr,
            flush=True,
        )
        install(str(venv / "bin" / "python"), venv)
    return pivot_script(venv)


if __name__ == "__main__":
    python = os.environ.get("PYTHON", "python3")
    current = installed_id()
    if current is not None and current == source_id() and pivot_script().exists():
        print(f"Pivot venv ready: {current} at {VENV}")
    else:
        print(f"Pivot venv ready: {install(python)} at {VENV}")
