"""Remote configuration: the committed file, the local file, and secrets."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from fsspec.registry import _registry as fsspec_loaded_classes

from pivot import config
from pivot.cli.advice import paragraph
from pivot.errors import DefinitionError, MissingPackage, PivotError
from pivot.project import Project, init_project
from pivot.remote.options import check_option
from pivot.remote.stores import open_remote
from pivot.urls import redact_url


@pytest.fixture
def project(tmp_path):
    init_project(tmp_path)
    return Project(tmp_path)


def test_add_list_default_modify_remove(project):
    config.add_remote(project, "origin", "s3://bucket/prefix", default=True)
    config.add_remote(project, "backup", "/mnt/backup")
    config.modify_remote(project, "origin", "endpoint_url", "http://127.0.0.1:9000")
    config.modify_remote(project, "origin", "jobs", "16")
    listed = {cfg.name: (cfg, is_default) for cfg, is_default in config.list_remotes(project)}
    assert listed["origin"][1] and not listed["backup"][1]
    origin = config.get_remote(project)
    assert origin.url == "s3://bucket/prefix"
    assert origin.options == {"endpoint_url": "http://127.0.0.1:9000", "jobs": 16}
    assert origin.jobs == 16
    config.set_default_remote(project, "backup")
    assert config.get_remote(project).name == "backup"
    config.remove_remote(project, "backup")
    assert config.default_remote_name(project) is None
    assert config.get_remote(project).name == "origin"  # the only one left
    text = (project.pivot_dir / "config.yaml").read_text()
    assert "endpoint_url" in text and "backup" not in text


def test_local_file_wins_and_holds_secrets(project):
    config.add_remote(project, "origin", "s3://bucket/prefix", default=True)
    config.modify_remote(project, "origin", "region", "eu-west-1")
    config.modify_remote(project, "origin", "region", "us-east-1", local=True)
    config.modify_remote(project, "origin", "secret_access_key", "s3cr3t-value", local=True)
    origin = config.get_remote(project, "origin")
    assert origin.options["region"] == "us-east-1"
    assert origin.options["secret_access_key"] == "s3cr3t-value"
    assert "s3cr3t-value" not in (project.pivot_dir / "config.yaml").read_text()
    assert "s3cr3t-value" in (project.pivot_dir / "config.local.yaml").read_text()
    config.modify_remote(project, "origin", "region", unset=True, local=True)
    assert config.get_remote(project, "origin").options["region"] == "eu-west-1"


@pytest.mark.parametrize("key", sorted(config.SECRET_KEYS))
def test_secrets_refused_in_committed_file(project, key):
    config.add_remote(project, "origin", "s3://bucket/prefix")
    with pytest.raises(PivotError, match="--local"):
        config.modify_remote(project, "origin", key, "hunter2")
    assert "hunter2" not in (project.pivot_dir / "config.yaml").read_text()


def test_url_with_password_refused_unless_local(project):
    with pytest.raises(PivotError, match="password"):
        config.add_remote(project, "web", "https://user:hunter2@example.com/store")
    config.add_remote(project, "web", "https://user:hunter2@example.com/store", local=True)
    assert config.get_remote(project, "web").url.startswith("https://user:")


def test_committed_secret_is_reported(project):
    (project.pivot_dir / "config.yaml").write_text(
        "remotes:\n  origin:\n    url: s3://b/p\n    secret_access_key: oops\n"
    )
    with pytest.raises(PivotError, match=r"config\.local\.yaml") as info:
        config.remotes(project)
    assert "oops" not in str(info.value)


def test_bad_names_keys_and_values(project):
    with pytest.raises(PivotError, match="Invalid remote name"):
        config.add_remote(project, "../x", "/tmp/x")
    config.add_remote(project, "origin", "/tmp/x")
    with pytest.raises(PivotError, match="already exists"):
        config.add_remote(project, "origin", "/tmp/y")
    with pytest.raises(PivotError, match=r"Unknown option 'colour'.*accepts jobs"):
        check_option("/tmp/x", "origin", "colour", "blue")
    with pytest.raises(PivotError, match="Invalid option name"):
        config.modify_remote(project, "origin", "Colour!", "blue")
    with pytest.raises(PivotError, match="integer"):
        config.modify_remote(project, "origin", "jobs", "many")
    with pytest.raises(PivotError, match="Unknown remote"):
        config.get_remote(project, "nope")
    (project.pivot_dir / "config.yaml").write_text("remotes: [1, 2]\n")
    with pytest.raises(PivotError, match="remotes"):
        config.remotes(project)


def test_no_remote_configured(project):
    with pytest.raises(DefinitionError) as caught:
        config.get_remote(project)
    assert paragraph(caught.value) == (
        "No remote given and no default remote set. Add one with `pivot remote add --default "
        "NAME URL`, set one with `pivot remote default NAME`, or pass `-r NAME`."
    )


def test_redact_url():
    assert redact_url("https://user:pw@host/x") == "https://***@host/x"
    assert "SIG" not in redact_url("https://h/x?X-Amz-Signature=SIG&a=1")
    assert redact_url("https://h/x?X-Amz-Signature=SIG&a=1").endswith("a=***")  # any key
    assert redact_url("s3://bucket/prefix") == "s3://bucket/prefix"


# fsspec protocols whose package (module and pip name alike) Pivot's extras do not install.
UNINSTALLED_CANDIDATES = [
    ("oci", "ocifs"),
    ("wandb", "wandbfs"),
    ("tos", "tosfs"),
    ("box", "boxfs"),
    ("oss", "ossfs"),
]


def test_a_protocol_whose_package_is_absent_names_the_package(monkeypatch):
    absent = [c for c in UNINSTALLED_CANDIDATES if importlib.util.find_spec(c[1]) is None]
    if absent:
        protocol, package = absent[0]
    else:  # every candidate installed: make the first one unimportable
        protocol, package = UNINSTALLED_CANDIDATES[0]
        monkeypatch.setitem(sys.modules, package, None)
        monkeypatch.delitem(fsspec_loaded_classes, protocol, raising=False)
    with pytest.raises(MissingPackage) as caught:
        open_remote(f"{protocol}://bucket/prefix", name="m")
    message = str(caught.value)
    head = (
        f"The remote 'm' ({protocol}://bucket/prefix) uses the {protocol}:// protocol, whose "
        f"package is not installed. Install it"
    )
    assert message.startswith(head), message
    assert package in message[len(head) :], message


def test_protocol_errors(tmp_path):
    with pytest.raises(PivotError, match="unknown protocol"):
        open_remote("nosuchproto://x/y", name="n")
    with pytest.raises(PivotError, match="no bucket"):
        open_remote("s3://", name="s")


def test_relative_local_remote_resolves_from_project(tmp_path):
    remote = open_remote("../store", name="l", base=tmp_path / "proj")
    assert remote.store.root == tmp_path / "store"
    assert open_remote(f"file://{tmp_path}/a", name="f").store.root == tmp_path / "a"
