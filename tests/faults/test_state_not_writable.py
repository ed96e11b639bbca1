"""A folder Pivot writes in that refuses writes (`.pivot/tmp`, the cache's objects, an
output's folder): every command says so in one paragraph naming the folder and what to do,
exits 1, shows no traceback and leaves nothing half-written; the stage is not blamed.

The refusals are real, for root too (tests run as root in CI containers, where a chmod
alone stops nothing): a chmod 0555 folder with the command run without the capabilities
that override file permissions (`setpriv`; EACCES), an immutable folder (`chattr +i`;
EPERM), and a read-only bind mount of the folder on itself (EROFS). Each is skipped, with
the reason, where it cannot be produced."""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest
from support import PYTHONPATH, word_pipeline, write_files

PIPELINE = word_pipeline("one")
# Run as root without the capabilities that let root write where permissions forbid it.
NO_OVERRIDE = [
    "setpriv",
    "--inh-caps=-all",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
    "--",
]
REASONS = {
    "chmod": "(permission denied)",
    "immutable": "(operation not permitted)",
    "read-only mount": "(read-only file system)",
}


def _refuses(prefix: list[str], folder: pathlib.Path) -> bool:
    """Whether a process started with `prefix` is refused a new file in `folder`."""
    code = f"open({str(folder / 'probe')!r}, 'w')"
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True)
    return done.returncode != 0 and b"Error" in done.stderr


@functools.cache
def _prefix_for(kind: str) -> tuple[list[str] | None, str]:
    """The command prefix under which a folder refused by `kind` refuses writes (None
    when it cannot be produced here), and why not."""
    with tempfile.TemporaryDirectory(prefix="pivot-refusal-") as base:
        folder = pathlib.Path(base) / "d"
        folder.mkdir()
        try:
            with _refused(kind, folder) as prefix:
                if _refuses(prefix, folder):
                    return prefix, ""
                return None, f"a {kind} folder does not refuse writes here"
        except (OSError, subprocess.CalledProcessError) as exc:
            return None, f"cannot make a {kind} folder here ({exc})"


@contextlib.contextmanager
def _refused(kind: str, folder: pathlib.Path):
    """`folder` refusing writes by `kind` while the block runs; yields the prefix to run
    commands with."""
    if kind == "chmod":
        prefix = NO_OVERRIDE if os.geteuid() == 0 else []
        os.chmod(folder, 0o555)
        try:
            yield prefix
        finally:
            os.chmod(folder, 0o755)
    elif kind == "immutable":
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
        try:
            yield []
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True, capture_output=True)
    else:
        bind = ["mount", "--bind", "-o", "ro", str(folder), str(folder)]
        subprocess.run(bind, check=True, capture_output=True)
        try:
            yield []
        finally:
            subprocess.run(["umount", str(folder)], check=True, capture_output=True)


@contextlib.contextmanager
def refused(kind: str, folder: pathlib.Path):
    prefix, why = _prefix_for(kind)
    if prefix is None:
        pytest.skip(why)
    with _refused(kind, folder) as prefix:
        yield prefix


def pivot_as(prefix: list[str], root: pathlib.Path, *args: str, clean: bool = True, **env: str):
    """`pivot ARGS` in `root` started with `prefix`: expected to fail with exit code 1
    (without a traceback unless not `clean`)."""
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "pivot", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
        timeout=120,
    )
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    if clean:
        assert "Traceback" not in done.stderr and "Internal error" not in done.stderr
    return done


def assert_names(proc, folder: str, kind: str) -> None:
    """One paragraph naming `folder` (as the user would type it) and the refusal."""
    expected = f"Cannot write in {folder} {REASONS[kind]}: "
    assert expected in proc.stderr, proc.stderr
    assert "and run the command again. Nothing half-written was kept." in proc.stderr
    assert "/proc/self/fd" not in proc.stderr and "access denied" not in proc.stderr


def _words(project: pathlib.Path, word: str) -> None:
    write_files(project, {"pipeline.py": word_pipeline(word)})


def _names(folder: pathlib.Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("kind", list(REASONS))
def test_run_with_a_refusing_tmp_folder_blames_the_folder_not_the_stage(project, pivot, kind):
    _words(project, "one")
    pivot("run")
    lock = project / ".pivot/stages/p/make.lock"
    before = lock.read_bytes()
    tmp = project / ".pivot/tmp"
    _words(project, "two")
    names = _names(tmp)
    with refused(kind, tmp) as prefix:
        failed = pivot_as(prefix, project, "run")
    assert_names(failed, ".pivot/tmp", kind)
    if kind != "read-only mount":  # there the command lock is refused first
        assert "Stage p/make" in failed.stderr and "could not store its outputs" in failed.stderr
    assert "PermissionError" not in failed.stderr
    assert lock.read_bytes() == before  # nothing recorded
    assert _names(tmp) <= names  # no temp file left
    assert "ran" in pivot("run").stdout  # fixed: it runs


def test_run_with_refusing_cache_objects(project, pivot):
    _words(project, "one")
    pivot("run")
    objects = project / ".pivot/cache/objects"
    _words(project, "two")
    with refused("chmod", objects) as prefix:
        failed = pivot_as(prefix, project, "run")
    assert_names(failed, ".pivot/cache/objects", "chmod")
    assert "chmod u+w .pivot/cache/objects" in failed.stderr
    assert not list((project / ".pivot/tmp").glob("blob.*"))


@pytest.mark.parametrize("kind", list(REASONS))
def test_track_with_a_refusing_tmp_folder(project, pivot, kind):
    write_files(project, {"data/raw.csv": "a,b\n1,2\n"})
    (project / ".pivot/tmp").mkdir(exist_ok=True)  # as any command makes it
    tmp = project / ".pivot/tmp"
    with refused(kind, tmp) as prefix:
        failed = pivot_as(prefix, project, "track", "data/raw.csv")
    assert_names(failed, ".pivot/tmp", kind)
    assert not (project / "data/raw.csv.pvt").exists() and not list(tmp.glob("blob.*"))
    pivot("track", "data/raw.csv")


def test_a_tmp_folder_owned_by_another_user_without_its_lock_file(project, pivot):
    """The command lock itself cannot be made: the first write of every command."""
    write_files(project, {"data/raw.csv": "a\n"})
    (project / ".pivot/tmp").mkdir(exist_ok=True)  # as any command makes it
    with refused("chmod", project / ".pivot/tmp") as prefix:
        failed = pivot_as(prefix, project, "track", "data/raw.csv")
    assert_names(failed, ".pivot/tmp", "chmod")


def _published(project, pivot, store: pathlib.Path) -> None:
    _words(project, "one")
    write_files(project, {"data/raw.csv": "a,b\n1,2\n"})
    pivot("remote", "add", "origin", str(store), "--default")
    pivot("run")
    pivot("track", "data/raw.csv")
    pivot("push", "--all")


@pytest.mark.parametrize("command", ["pull", "fetch"])
def test_pull_and_fetch_with_a_refusing_tmp_folder(project, pivot, tmp_path, command):
    _published(project, pivot, tmp_path / "store")
    for path in (project / ".pivot/cache/objects").iterdir():
        subprocess.run(["rm", "-rf", str(path)], check=True)
    (project / "out.txt").unlink()
    tmp = project / ".pivot/tmp"
    with refused("chmod", tmp) as prefix:
        failed = pivot_as(prefix, project, command)
    assert_names(failed, ".pivot/tmp", "chmod")
    assert not list(tmp.glob("blob.*")) and not (project / "out.txt").exists()
    pivot("pull")
    assert (project / "out.txt").read_text() == "one" * 100


@pytest.fixture(params=["directory", "seaweedfs"])
def remote_env(request, project, pivot, tmp_path) -> dict[str, str]:
    """A default remote `origin` (a folder or a SeaweedFS bucket); the env it needs."""
    if request.param == "directory":
        pivot("remote", "add", "origin", str(tmp_path / "store"), "--default")
        return {}
    server = request.getfixturevalue("seaweedfs")
    bucket = server.new_bucket()
    pivot("remote", "add", "origin", f"s3://{bucket}/cache", "--default")
    pivot("remote", "modify", "origin", "endpoint_url", server.endpoint)
    pivot("remote", "modify", "origin", "region", "us-east-1")
    return {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}


def test_pulling_a_large_blob_into_a_refusing_tmp_folder_does_not_blame_the_remote(
    project, pivot, remote_env
):
    """A large incompressible blob is downloaded straight into a cache temp file (the
    remote's own download): the refused local write is still the folder's error."""
    data = os.urandom((16 << 20) + 1)
    write_files(project, {"pipeline.py": PIPELINE})
    (project / "data").mkdir()
    (project / "data/big.bin").write_bytes(data)
    pivot("track", "data/big.bin")
    pivot("push", "--all", **remote_env)
    subprocess.run(["rm", "-rf", str(project / ".pivot/cache")], check=True)
    (project / "data/big.bin").unlink()
    tmp = project / ".pivot/tmp"
    with refused("chmod", tmp) as prefix:
        failed = pivot_as(prefix, project, "pull", "data/big.bin", **remote_env)
    assert_names(failed, ".pivot/tmp", "chmod")
    assert not (project / "data/big.bin").exists() and not list(tmp.glob("blob.*"))
    pivot("pull", "data/big.bin", **remote_env)
    assert (project / "data/big.bin").read_bytes() == data


def test_checkout_into_a_refusing_folder_names_it(project, pivot):
    write_files(project, {"data/raw.csv": "a,b\n1,2\n", "pipeline.py": PIPELINE})
    pivot("track", "data/raw.csv")
    (project / "data/raw.csv").unlink()
    with refused("chmod", project / "data") as prefix:
        failed = pivot_as(prefix, project, "checkout", "data/raw.csv")
    assert_names(failed, "data", "chmod")
    assert "chmod u+w data" in failed.stderr
    assert not [p for p in (project / "data").iterdir() if p.name.startswith(".raw.csv")]
    pivot("checkout", "data/raw.csv")
    assert (project / "data/raw.csv").read_text() == "a,b\n1,2\n"


def test_verbose_shows_the_traceback(project, pivot):
    write_files(project, {"data/raw.csv": "a\n"})
    (project / ".pivot/tmp").mkdir(exist_ok=True)  # as any command makes it
    with refused("chmod", project / ".pivot/tmp") as prefix:
        done = pivot_as(prefix, project, "--verbose", "track", "data/raw.csv", clean=False)
    assert "Traceback" in done.stderr and "PermissionError" in done.stderr, done.stderr


def test_a_stage_that_writes_into_a_refusing_folder_is_the_stage_error(project, pivot):
    """A stage's own refused write stays the stage's error, with its traceback."""
    source = PIPELINE.replace("    return WORD", "    open('locked/x', 'w')\n    return WORD")
    write_files(project, {"pipeline.py": source})
    (project / "locked").mkdir()
    with refused("chmod", project / "locked") as prefix:
        failed = pivot_as(prefix, project, "run", clean=False)
    assert "raised PermissionError" in failed.stderr, failed.stderr
    assert "Cannot write in" not in failed.stderr


def test_a_dep_folder_that_refuses_listing_is_not_called_unwritable(project, pivot):
    """Pivot only reads a dep folder: one it may not list is named as refusing reading,
    with a fix that lets it be read (`chmod u+w` would change nothing)."""
    source = PIPELINE.replace(
        "def make()",
        "import pathlib\n\n\ndef make(d: Annotated[pathlib.Path, pivot.Dep('data')])",
    )
    write_files(project, {"data/a.txt": "a\n", "pipeline.py": source})
    prefix, why = _prefix_for("chmod")
    if prefix is None:
        pytest.skip(why)
    (project / "data").chmod(0o333)  # writable and searchable, not readable
    try:
        failed = pivot_as(prefix, project, "run")
    finally:
        (project / "data").chmod(0o755)
    assert "Cannot read data (permission denied): " in failed.stderr, failed.stderr
    assert "chmod u+rx data" in failed.stderr
    assert "Cannot write in" not in failed.stderr
    assert not (project / "out.txt").exists()


@pytest.mark.parametrize("kind", list(REASONS))
def test_rerun_with_the_old_output_in_a_refusing_folder_names_the_folder(project, pivot, kind):
    """Removing the old output before a re-run is refused by its folder, not by the file
    (which is writable): the paragraph names the folder, as the user must fix it."""
    source = PIPELINE.replace('"out.txt"', '"out dir/out.txt"')
    write_files(project, {"pipeline.py": source})
    pivot("run")
    write_files(project, {"pipeline.py": source.replace('"one"', '"two"')})
    with refused(kind, project / "out dir") as prefix:
        failed = pivot_as(prefix, project, "run")
    assert_names(failed, "out dir", kind)
    assert "Cannot open" not in failed.stderr
    if kind != "read-only mount":
        fixer = "chmod u+w" if kind == "chmod" else "chattr -i"
        assert f"{fixer} 'out dir'" in failed.stderr, failed.stderr
    assert (project / "out dir/out.txt").read_text() == "one" * 100
    assert "ran" in pivot("run").stdout
    assert (project / "out dir/out.txt").read_text() == "two" * 100
