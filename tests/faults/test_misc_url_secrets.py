"""Credentials in a remote's url: never committed, never printed, never sent to S3 as a key."""

from __future__ import annotations

import os

import pytest
from support import PYTHONPATH, write_files

SECRET = "XSECRETX9/zz"  # AWS secret keys hold '/'
PIPELINE = """
from typing import Annotated

import pivot

pipeline = pivot.Pipeline("p")


def make() -> Annotated[str, pivot.Out("out.txt", pivot.loaders.Text())]:
    return "x"


pipeline.register(make)
"""
AWS = {
    "AWS_ACCESS_KEY_ID": "a",
    "AWS_SECRET_ACCESS_KEY": "b",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}


def assert_clean(proc, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert SECRET.split("/")[0] not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def config_text(project) -> str:
    path = project / ".pivot/config.yaml"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize(
    "url",
    [
        f"s3://b/p?secret_access_key={SECRET}",
        f"https://example.invalid/store?sig={SECRET}",
        f"s3://AKIA:{SECRET}@bucket/p",
        f"https://user:{SECRET}@example.invalid/store",
    ],
)
def test_credentials_in_a_url_are_not_committed(project, pivot, url) -> None:
    assert_clean(pivot("remote", "add", "q", url, rc=1), "config.yaml", "--local")
    assert SECRET not in config_text(project)


def test_credentials_in_an_endpoint_url_are_not_committed(project, pivot) -> None:
    pivot("remote", "add", "q", "s3://b/p")
    proc = pivot("remote", "modify", "q", "endpoint_url", f"http://u:{SECRET}@h:9000", rc=1)
    assert_clean(proc, "endpoint_url", "--local")
    assert SECRET not in config_text(project)


def test_a_hand_committed_secret_url_is_refused_without_printing_it(project, pivot) -> None:
    write_files(
        project, {".pivot/config.yaml": f"remotes:\n  q:\n    url: s3://b/p?token={SECRET}\n"}
    )
    assert_clean(pivot("remote", "list", rc=1), "config.yaml", "'token'", "config.local.yaml")


@pytest.mark.parametrize("url", [f"s3://b/p?secret_access_key={SECRET}", "s3://b/p?region=x"])
def test_a_query_in_an_s3_url_is_refused_not_read_as_the_prefix(project, pivot, url) -> None:
    proc = pivot("remote", "add", "--local", "q", url, rc=1)
    assert_clean(proc, "query", "s3://BUCKET/PREFIX", "pivot remote modify q")
    # A hand-written local config fails at use, before any request.
    write_files(
        project,
        {
            "pipeline.py": PIPELINE,
            ".pivot/config.local.yaml": f"remotes:\n  q:\n    url: '{url}'\n",
        },
    )
    pivot("run", "--no-remote")
    assert_clean(pivot("push", **AWS, rc=1), "query", "'q'")


def test_user_and_password_in_an_s3_url_is_a_clear_error(project, pivot) -> None:
    write_files(
        project,
        {
            "pipeline.py": PIPELINE,
            ".pivot/config.local.yaml": f"remotes:\n  q:\n    url: 's3://AKIA:{SECRET}@bucket/p'\n",
        },
    )
    pivot("run", "--no-remote")
    proc = pivot("push", **AWS, rc=1)
    assert_clean(proc, "user name or password", "access_key_id", "profile")
    assert "regex" not in proc.stderr and "ParamValidationError" not in proc.stderr
    listed = pivot("remote", "list").stdout
    assert SECRET not in listed and "s3://***@bucket/p" in listed


def test_query_values_are_hidden_in_listings(project, pivot) -> None:
    pivot("remote", "add", "--local", "h", f"https://example.invalid/x?k={SECRET}")
    pivot("remote", "add", "--local", "s", "s3://bucket/prefix")
    pivot("remote", "modify", "--local", "s", "endpoint_url", f"http://u:{SECRET}@h:9000")
    listed = pivot("remote", "list").stdout
    assert SECRET not in listed and "k=***" in listed and "***@h:9000" in listed


def test_https_install_hint_names_the_pip_package(project, pivot, tmp_path) -> None:
    """aiohttp made unimportable (a package of that name that refuses to load, first on
    the path), as on a machine without it."""
    blocker = tmp_path / "blocked" / "aiohttp"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('aiohttp is not installed')\n")
    write_files(project, {"pipeline.py": PIPELINE})
    pivot("remote", "add", "h", "https://example.invalid/store")
    pivot("run", "--no-remote")
    proc = pivot("push", rc=1, PYTHONPATH=f"{blocker.parent}{os.pathsep}{PYTHONPATH}")
    assert_clean(proc, 'pip install "fsspec[http]"')
    assert "pip install HTTPFileSystem" not in proc.stderr
