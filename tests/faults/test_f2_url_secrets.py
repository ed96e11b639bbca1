"""Credentials anywhere in a remote's url (a user name, the fragment, path parameters) are
never committed and never printed."""

from __future__ import annotations

import pytest

SECRET = "XSECRETX9zz"


@pytest.mark.parametrize(
    "url",
    [
        f"https://h.invalid/p#token={SECRET}",
        f"https://{SECRET}@h.invalid/p",
        f"https://h.invalid/p;password={SECRET}",
        f"https://h.invalid/p;x=1/q;api_key={SECRET}",
        f"sftp://{SECRET}@h.invalid/p",
    ],
)
def test_credentials_in_a_url_are_refused_in_the_committed_config(project, pivot, url):
    proc = pivot("remote", "add", "x", url, rc=1)
    assert "Traceback" not in proc.stderr and "--local" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    config = project / ".pivot" / "config.yaml"
    assert not config.exists() or SECRET not in config.read_text()

    added = pivot("remote", "add", "--local", "x", url)
    listed = pivot("remote", "list")
    assert SECRET not in added.stdout + added.stderr + listed.stdout + listed.stderr
    assert "h.invalid" in listed.stdout


def test_a_fragment_and_path_parameters_are_hidden_in_messages(project, pivot):
    url = f"https://h.invalid/p;v={SECRET}/q#{SECRET}"
    added = pivot("remote", "add", "--local", "x", url)
    assert SECRET not in added.stdout and "https://h.invalid/p;v=***/q#***" in added.stdout


def test_a_hand_committed_token_user_is_refused_without_printing_it(project, pivot):
    (project / ".pivot" / "config.yaml").write_text(
        f"remotes:\n  x:\n    url: https://{SECRET}@h.invalid/p\n"
    )
    proc = pivot("remote", "list", rc=1)
    assert "config.yaml" in proc.stderr and SECRET not in proc.stdout + proc.stderr
