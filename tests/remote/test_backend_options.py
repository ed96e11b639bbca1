"""Storage options of any fsspec backend: which are accepted, how values are typed, where
secrets may live (config.local.yaml, PIVOT_REMOTE_<NAME>_<OPTION>), and redaction by
structure."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import PYTHONPATH

from pivot import config
from pivot.errors import PivotError
from pivot.project import Project, init_project
from pivot.remote.options import check_option, known_options
from pivot.remote.stores import open_remote
from pivot.urls import is_secret_option, redact_text

FTP = "ftp://127.0.0.1:2121/store"


@pytest.fixture
def project(tmp_path):
    init_project(tmp_path)
    return Project(tmp_path)


def test_each_backend_accepts_its_own_options():
    assert {"username", "password", "port", "timeout", "tls", "jobs"} <= set(known_options("ftp"))
    assert {"username", "password", "client_keys", "known_hosts", "port"} <= set(
        known_options("sftp")
    )
    assert {"user", "password", "token", "verify", "timeout"} <= set(known_options("webdav"))
    assert {"token", "project", "endpoint_url"} <= set(known_options("gs"))
    assert {"account_name", "account_key", "connection_string", "sas_token"} <= set(
        known_options("az")
    )
    assert known_options("memory") == ["jobs"]
    assert "endpoint_url" in known_options("s3") and "username" not in known_options("s3")


def test_unknown_option_names_the_remote_and_the_known_ones():
    with pytest.raises(PivotError) as info:
        check_option("ftp://u:pw9@127.0.0.1/store", "box", "usrname", "u")
    message = str(info.value)
    assert "'usrname'" in message and "'box'" in message and "ftp://" in message
    assert "username" in message and "password" in message and "pw9" not in message
    with pytest.raises(PivotError, match="S3 accepts access_key_id"):
        check_option("s3://bucket/p", "s3", "username", "u")


def test_values_are_typed_by_the_keyword_they_fill():
    assert check_option(FTP, "f", "port", "2121") == 2121
    assert check_option(FTP, "f", "tls", "yes") is True
    assert check_option(FTP, "f", "timeout", "7") == 7
    assert check_option("sftp://h/x", "s", "known_hosts", "none") is None
    assert check_option(FTP, "f", "password", "12345") == "12345"  # a secret stays text
    with pytest.raises(PivotError, match="must be a number"):
        check_option(FTP, "f", "port", "twenty")
    with pytest.raises(PivotError, match="true or false"):
        check_option(FTP, "f", "tls", "maybe")


def test_unknown_option_in_the_config_is_refused_when_opened():
    with pytest.raises(PivotError, match="Unknown option 'colour'"):
        open_remote(FTP, name="f", options={"colour": "blue"})


@pytest.mark.parametrize(
    "key",
    ["password", "account_key", "connection_string", "sas_token", "token", "client_secret"],
)
def test_secret_options_only_in_the_local_file(project, key):
    config.add_remote(project, "box", FTP)
    with pytest.raises(PivotError) as info:
        config.modify_remote(project, "box", key, "hunter2-xyz")
    assert "--local" in str(info.value) and f"PIVOT_REMOTE_BOX_{key.upper()}" in str(info.value)
    assert "hunter2-xyz" not in str(info.value)
    assert "hunter2-xyz" not in (project.pivot_dir / "config.yaml").read_text()
    config.modify_remote(project, "box", key, "hunter2-xyz", local=True)
    assert config.get_remote(project, "box").options[key] == "hunter2-xyz"


def test_hand_written_secret_in_the_committed_file_is_refused(project):
    (project.pivot_dir / "config.yaml").write_text(
        f"remotes:\n  box:\n    url: {FTP}\n    account_key: k-123\n"
    )
    with pytest.raises(PivotError, match=r"holds a secret for remote 'box' .account_key"):
        config.remotes(project)


def test_options_from_the_environment(project, monkeypatch):
    config.add_remote(project, "box", FTP)
    config.add_remote(project, "box_b", FTP)
    config.add_remote(project, "my-ftp.1", FTP)
    monkeypatch.setenv("PIVOT_REMOTE_BOX_PASSWORD", "from-env")
    monkeypatch.setenv("PIVOT_REMOTE_BOX_B_USERNAME", "bee")
    monkeypatch.setenv("PIVOT_REMOTE_MY_FTP_1_TIMEOUT", "9")
    monkeypatch.setenv("PIVOT_REMOTE_BOX_URL", "ftp://elsewhere/x")  # the url is not an option
    remotes = config.remotes(project)
    assert remotes["box"].options == {"password": "from-env"}
    assert remotes["box"].url == FTP
    assert remotes["box_b"].options == {"username": "bee"}
    assert remotes["my-ftp.1"].options == {"timeout": "9"}


def test_secrets_are_found_by_name():
    for key in (
        "password",
        "passwd",
        "account_key",
        "sas_token",
        "client_secret",
        "connection_string",
        "credential",
        "access_key_id",
        "token",
    ):
        assert is_secret_option(key), key
    for key in ("username", "port", "timeout", "account_name", "endpoint_url", "jobs"):
        assert not is_secret_option(key), key


def test_redaction_by_structure_never_mangles_words():
    message = (
        "Cannot write packs/61/61d1 to remote 'ftp-local' (ftp://u:p@127.0.0.1:2121/store): "
        "error_perm: 550 p refused"
    )
    assert redact_text(message, ("u", "p")) == (
        "Cannot write packs/61/61d1 to remote 'ftp-local' (ftp://***@127.0.0.1:2121/store): "
        "error_perm: 550 *** refused"
    )
    assert redact_text("login k3y-9 failed; sftp://me:k3y-9@h/x", ("k3y-9",)) == (
        "login *** failed; sftp://***@h/x"
    )


def test_a_missing_backend_package_names_the_extra(tmp_path):
    """gcsfs made unimportable in a fresh interpreter, as on a machine without it."""
    code = (
        "import sys; sys.modules['gcsfs'] = None\n"
        "from pivot.errors import PivotError\n"
        "from pivot.remote.stores import open_remote\n"
        "try:\n"
        "    open_remote('gs://bucket/prefix', name='g')\n"
        "except PivotError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    assert "'g' (gs://bucket/prefix)" in out and "pip install 'pivot[gcs]'" in out


@given(
    words=st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=12),
    secret=st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True),
)
def test_redaction_hides_each_whole_token_and_keeps_every_other_word(words, secret):
    text = " ".join([*words, secret, f"({secret})", f"x{secret}x"])
    redacted = redact_text(text, (secret,))
    assert redacted.split(" ")[: len(words)] == [w if w != secret else "***" for w in words]
    assert redacted.split(" ")[len(words) :] == ["***", "(***)", f"x{secret}x"]
