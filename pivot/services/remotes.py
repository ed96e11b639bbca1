"""The work behind `remote add/list/remove/default/modify/clean`: the config, with secrets
hidden in what is returned."""

from __future__ import annotations

import os
from typing import Any

from pivot import config
from pivot.errors import DefinitionError
from pivot.project import Project
from pivot.run.remote_view import local_directory, open_configured
from pivot.urls import is_secret_option, redact_url


def add(name: str, url: str, default: bool, local: bool) -> dict[str, Any]:
    """Add remote `name` (its url stored as typed); returns its row as `list_remotes`."""
    project = Project.discover()
    config.add_remote(project, name, url, default=default, local=local)
    return next(r for r in list_remotes() if r["name"] == name)


def list_remotes() -> list[dict[str, Any]]:
    """Each remote: name, redacted URL, whether it is the default, its options (secrets
    as `***`, URLs redacted)."""
    rows = []
    project = Project.discover()
    for cfg, is_default in config.list_remotes(project):
        options = dict(sorted(cfg.options.items()))
        for key in options:
            if is_secret_option(key):
                options[key] = "***"
        for key in set(config.URL_KEYS) & set(options):
            options[key] = redact_url(str(options[key]))
        row = {"name": cfg.name, "url": redact_url(cfg.url), "default": is_default, **options}
        folder = local_directory(project, cfg.url)
        if folder is not None:
            row["path"] = folder
            row["exists"] = os.path.isdir(folder)
        rows.append(row)
    return rows


def remove(name: str) -> None:
    """Remove remote `name` from both config files."""
    config.remove_remote(Project.discover(), name)


def set_default(name: str, local: bool) -> None:
    config.set_default_remote(Project.discover(), name, local=local)


def modify(name: str, key: str, value: str | None, local: bool, unset: bool) -> str | None:
    """Set (or unset) option `key` of remote `name`; returns the value as it may be shown."""
    if value is None and not unset:
        raise DefinitionError(f"Give a value for {key}, or pass --unset to remove it.", remote=name)
    project = Project.discover()
    if not unset and key != "url":
        from pivot.remote.options import check_option

        check_option(config.get_remote(project, name).url, name, key, value)
    config.modify_remote(project, name, key, value, local=local, unset=unset)
    return "***" if is_secret_option(key) else value


def clean(name: str | None, hours: float) -> tuple[int, str]:
    """Abort the remote's unfinished uploads begun at least `hours` ago; returns how many
    and the remote's display name."""
    target = open_configured(Project.discover(), name)
    return target.clean_uploads(hours * 3600), target.display
