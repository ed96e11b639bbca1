"""`pivot gc` says which removed objects no remote holds by what each remote holds now:
a remote emptied by hand since its indexes were cached is noticed by its identity object,
and a remote that cannot be reached is named as not checked."""

from __future__ import annotations

import json
import shutil

import pytest
from support import PivotCLI, free_ports, word_pipeline, write_files

from pivot.remote import identity

PIPELINE = word_pipeline("one")
WARNING = "no configured remote holds"


def _run_word(project, pivot: PivotCLI, word: str, **env: str) -> None:
    write_files(project, {"pipeline.py": word_pipeline(word)})
    pivot("run", **env)


@pytest.fixture(params=["directory", "seaweedfs"])
def remote_kind(request, tmp_path, project, pivot):
    """A default remote `origin` (a folder or a SeaweedFS bucket): the env its commands
    need, and how to empty it by hand."""
    if request.param == "directory":
        store = tmp_path / "store"
        pivot("remote", "add", "origin", str(store), "--default")

        def empty() -> None:
            assert any(store.iterdir()), "nothing was pushed"
            shutil.rmtree(store)
            store.mkdir()

        return {}, empty
    server = request.getfixturevalue("seaweedfs")
    bucket = server.new_bucket()
    pivot("remote", "add", "origin", f"s3://{bucket}/cache", "--default")
    pivot("remote", "modify", "origin", "endpoint_url", server.endpoint)
    pivot("remote", "modify", "origin", "region", "us-east-1")
    env = {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}

    def empty_bucket() -> None:
        client = server.client()
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert any(o["Key"] == f"cache/{identity.KEY}" for o in listed), listed
        for obj in listed:
            client.delete_object(Bucket=bucket, Key=obj["Key"])

    return env, empty_bucket


def test_a_remote_emptied_by_hand_holds_nothing(project, pivot, remote_kind):
    env, empty = remote_kind
    _run_word(project, pivot, "one", **env)
    pivot("push", **env)
    _run_word(project, pivot, "two", **env)  # `one` is now referenced by nothing

    held = pivot("gc", "-n", **env)
    assert "Would remove 1 object(s)" in held.stdout, held.stdout
    assert WARNING not in held.stderr, held.stderr  # the remote holds it

    empty()
    dry = pivot("gc", "-n", "--json", **env)
    assert '"unpushed_removed": 1' in dry.stdout, dry.stdout + dry.stderr
    assert WARNING in dry.stderr and "exist nowhere" in dry.stderr, dry.stderr
    assert "could not be made" not in dry.stderr and "Traceback" not in dry.stderr
    done = pivot("gc", **env)
    assert "Removed 1 object(s)" in done.stdout and WARNING in done.stderr, done.stderr


def test_pushed_again_after_emptying_is_held_again(project, pivot, remote_kind):
    env, empty = remote_kind
    _run_word(project, pivot, "one", **env)
    pivot("push", **env)
    empty()
    pivot("push", **env)  # a new identity, and `one` stored again
    _run_word(project, pivot, "two", **env)
    dry = pivot("gc", "-n", **env)
    assert "Would remove 1 object(s)" in dry.stdout and WARNING not in dry.stderr, dry.stderr


def test_an_unreachable_remote_is_named_as_not_checked(project, pivot, tmp_path):
    pivot("remote", "add", "origin", str(tmp_path / "store"), "--default")
    (port,) = free_ports(1)
    pivot("remote", "add", "down", "s3://bucket/cache")
    pivot("remote", "modify", "down", "endpoint_url", f"http://127.0.0.1:{port}")
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    _run_word(project, pivot, "one")
    pivot("push")  # to `origin` only
    _run_word(project, pivot, "two")

    held = pivot("gc", "-n", **env)  # `origin` holds it: nothing to warn about
    assert WARNING not in held.stderr and "could not be made" not in held.stderr

    shutil.rmtree(tmp_path / "store")
    dry = pivot("gc", "-n", "--json", **env)
    assert WARNING in dry.stderr, dry.stderr
    assert "The check could not be made for remote 'down' (s3://bucket/cache)" in dry.stderr
    assert f"127.0.0.1:{port}" in dry.stderr and "s3cr3t-value" not in dry.stderr
    assert "Traceback" not in dry.stderr
    unchecked = json.loads(dry.stdout)["unchecked_remotes"]
    assert any(u.startswith("'down' (s3://bucket/cache): ") for u in unchecked), unchecked


def test_a_remote_folder_under_a_file_is_one_sentence_in_the_warning(project, pivot, tmp_path):
    """The reason a remote could not be checked ends its sentence, whatever its error."""
    (tmp_path / "a-file").write_text("not a folder\n")
    pivot("remote", "add", "origin", str(tmp_path / "a-file/store"), "--default")
    _run_word(project, pivot, "one")
    _run_word(project, pivot, "two")
    dry = pivot("gc", "-n")
    assert WARNING in dry.stderr, dry.stderr
    assert "The check could not be made for remote 'origin'" in dry.stderr
    assert "' It counts" not in dry.stderr and ". It counts as holding none" in dry.stderr
