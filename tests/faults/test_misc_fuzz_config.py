"""Fuzzing the config decoder: any bytes in config.yaml / config.local.yaml give a valid
config or a PivotError naming the file, never another exception."""

from __future__ import annotations

import datetime
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pivot import config
from pivot.errors import PivotError
from pivot.project import Project, init_project
from pivot.remote.stores import open_remote

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["s3://b/p", "s3://u:pw@b", "s3://b/p?k=v", "../store", "file:///x", "s3://"]),
    st.dates(min_value=datetime.date(1, 1, 1)),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
URLS = ["s3://b/p", "s3://u:pw@b", "s3://b/p?k=v", "s3://b/p#f", "s3://", "s3://a b/p"]
URLS += ["s3://[x/", "../store", "file:///x", "local://y", "https://u:pw@h/x?sig=1", "~/s"]
urls = st.sampled_from(URLS) | st.text(max_size=12)
option_keys = st.sampled_from(sorted(config.REMOTE_KEYS)) | st.text(max_size=6)
option_values = st.one_of(st.text(max_size=10), st.integers(-3, 100), urls, values)
# Mostly well-formed remotes (so that opening them is exercised too), and anything at all.
plausible = st.fixed_dictionaries(
    {"url": urls},
    optional={
        "jobs": st.integers(-1, 64) | st.sampled_from(["4", "lots", "", "1e3"]),
        "endpoint_url": urls,
        "region": st.text(max_size=5),
        "profile": st.text(max_size=5) | st.integers(),
        "secret_access_key": st.text(max_size=5) | values,
    },
)
remote_entry = plausible | plausible | st.dictionaries(option_keys, option_values, max_size=4)
remote_entry |= values
names = st.sampled_from(["origin", "o", "b-1"]) | st.text(max_size=6) | st.integers()
config_data = st.fixed_dictionaries(
    {},
    optional={
        "remotes": st.dictionaries(names, remote_entry, max_size=3) | values,
        "default_remote": names | values,
    },
)


def dumped(data) -> bytes:
    return yaml.dump(data, allow_unicode=True).encode("utf-8")


def mutated(data: bytes, where: int, junk: bytes) -> bytes:
    where = where % (len(data) + 1)
    return data[:where] + junk + data[where + len(junk) :]


near_valid = st.fixed_dictionaries(
    {"remotes": st.dictionaries(st.sampled_from(["origin", "o", "b-1"]), plausible, max_size=2)},
    optional={"default_remote": st.sampled_from(["origin", "o", "x"])},
)
yaml_bytes = (near_valid | near_valid | config_data | values).map(dumped)
file_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.text(max_size=60).map(lambda t: t.encode("utf-16")),
    yaml_bytes,
    yaml_bytes,
    yaml_bytes,
    st.builds(mutated, yaml_bytes, st.integers(0, 400), st.binary(min_size=1, max_size=4)),
)


def write(path: pathlib.Path, data: bytes | None) -> None:
    if data is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(data)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("fuzz-config")
    init_project(root)
    return Project(root)


def decode_config(project: Project) -> list:
    """Everything a command reads from the config, short of opening a remote."""
    config.load(project)
    config.default_remote_name(project)
    listed = config.list_remotes(project)
    for remote, _ in listed:
        assert isinstance(remote.url, str) and remote.url
        assert remote.jobs is None or (isinstance(remote.jobs, int) and remote.jobs >= 1)
        assert all(isinstance(k, str) for k in remote.options)
    return [remote for remote, _ in listed]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shared=st.none() | file_bytes, local=st.none() | file_bytes)
def test_any_config_bytes_give_a_config_or_an_error_naming_the_file(project, shared, local) -> None:
    shared_path, local_path = config.config_paths(project)
    write(shared_path, shared)
    write(local_path, local)
    try:
        remotes = decode_config(project)
    except PivotError as exc:
        event("PivotError")
        assert str(shared_path) in str(exc) or str(local_path) in str(exc), str(exc)
        return
    event(f"valid config, {min(len(remotes), 2)}+ remotes")
    for remote in remotes:
        protocol = remote.url.partition("://")[0] if "://" in remote.url else "file"
        if protocol not in ("s3", "s3a", "file", "local"):
            continue  # other filesystems may connect when opened
        try:
            open_remote(
                remote.url, name=remote.name, options=remote.options, base=project.root
            )  # no request is made
        except PivotError as exc:  # a url it cannot use, named with the remote
            assert f"remote {remote.name!r}" in str(exc), str(exc)
