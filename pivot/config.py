"""Project configuration: `.pivot/config.yaml` (committed) merged with `config.local.yaml`.

The committed file holds what the team shares (remotes, the default remote); the local
file (gitignored) holds credentials and machine-local overrides and wins on conflicts.
Secrets are refused in the committed file.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from pivot import _fs
from pivot.errors import CorruptFile, DefinitionError

if TYPE_CHECKING:
    import pathlib

    from pivot.project import Project

CONFIG_NAME = "config.yaml"
LOCAL_CONFIG_NAME = "config.local.yaml"

SECRET_KEYS = frozenset({"access_key_id", "secret_access_key", "session_token"})
INT_KEYS = frozenset({"jobs"})
URL_KEYS = ("url", "endpoint_url")
REMOTE_KEYS = frozenset({"url", "endpoint_url", "region", "profile", "jobs"} | SECRET_KEYS)
LINK_MODES = ("copy", "hardlink", "symlink")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OPTION_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


class RemoteConfig(NamedTuple):
    """One configured remote, merged from both files."""

    name: str
    url: str
    options: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    @property
    def jobs(self) -> int | None:
        value = self.options.get("jobs")
        return int(value) if value is not None else None


def config_paths(project: Project) -> tuple[pathlib.Path, pathlib.Path]:
    """The committed and the local config file of `project`."""
    return project.pivot_dir / CONFIG_NAME, project.pivot_dir / LOCAL_CONFIG_NAME


def _read(path: pathlib.Path) -> dict[str, Any]:
    """The config mapping in `path` ({} when absent), checked: a CorruptFile names the file
    and the key of anything Pivot cannot use."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise CorruptFile(
            f"The config file {path} is not UTF-8 text ({exc}).", path=path, hint="config-not-utf8"
        ) from None
    except OSError as exc:
        raise CorruptFile(
            f"Cannot read the config file {path}: {exc.strerror or exc}.", path=path
        ) from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CorruptFile(
            f"The config file {path} is not valid YAML ({exc}). Fix it.", path=path
        ) from exc
    except RecursionError:
        raise CorruptFile(
            f"The config file {path} is nested too deeply. Fix it.", path=path
        ) from None
    return _checked(data, path)


def _kind(value: Any, secret: bool = False) -> str:
    """What `value` is, for a message (its text only when short and not `secret`)."""
    kinds = {dict: "a mapping", list: "a list", type(None): "empty"}
    if type(value) in kinds or secret:
        return kinds.get(type(value), f"a {type(value).__name__}")
    return f"{type(value).__name__} {value!r}"[:80]


def _whole_number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    return None


def _checked(data: Any, path: pathlib.Path) -> dict[str, Any]:
    """`data` as a config mapping (names and option keys as strings), or a CorruptFile."""

    def fail(key: str, expected: str, value: Any) -> CorruptFile:
        from pivot.urls import is_secret_option

        shown = _kind(value, secret=is_secret_option(key.rpartition(".")[2]))
        return CorruptFile(
            f"The config file {path}: `{key}` must be {expected}, not {shown}. Edit the file "
            f"to fix it.",
            path=path,
        )

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CorruptFile(
            f"The config file {path} must hold a mapping at the top level "
            f"(`remotes:`, `default_remote:`), not {_kind(data)}.",
            path=path,
        )
    data = {str(k): v for k, v in data.items()}
    if "gitignore" in data and not isinstance(data["gitignore"], bool):
        raise fail("gitignore", "true or false", data["gitignore"])
    grace = data.get("gc_grace_hours")
    if grace is not None and (
        isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace < 1e6
    ):
        raise fail("gc_grace_hours", "a number of hours (0 or more)", grace)
    default = data.get("default_remote")
    if default is not None:
        if isinstance(default, bool) or not isinstance(default, str | int):
            raise fail("default_remote", "a remote name", default)
        data["default_remote"] = str(default)
    cache = data.get("cache")
    if cache is not None:
        if not isinstance(cache, dict):
            raise fail("cache", "a mapping (`link: copy`)", cache)
        for key, value in cache.items():
            if key != "link":
                raise fail(f"cache.{key}", "absent (the known key is `link`)", value)
            if value not in LINK_MODES:
                raise fail("cache.link", f"one of {', '.join(LINK_MODES)}", value)
    _check_executor(data, fail)
    remotes = data.get("remotes")
    if remotes is None:
        data["remotes"] = {}
        return data
    if not isinstance(remotes, dict):
        raise fail("remotes", "a mapping of remote names to their options", remotes)
    checked: dict[str, dict[str, Any]] = {}
    for name, options in remotes.items():
        if not isinstance(options, dict):
            raise fail(f"remotes.{name}", "a mapping of options (at least `url`)", options)
        if not _NAME_RE.match(str(name)):
            raise CorruptFile(
                f"The config file {path}: {str(name)!r} under `remotes` is not a valid remote "
                f"name (letters, digits, '_', '.', '-', starting with a letter or digit, at "
                f"most 64 characters). Edit the file to rename it.",
                path=path,
            )
        entry = checked[str(name)] = {}
        for key, value in options.items():
            key = str(key)
            where = f"remotes.{name}.{key}"
            if value is None or key not in REMOTE_KEYS:
                entry[key] = value  # unknown keys are storage options of other filesystems
            elif key in INT_KEYS:
                number = _whole_number(value)
                if number is None or number < 1:
                    raise fail(where, "a whole number of at least 1", value)
                entry[key] = number
            elif isinstance(value, bool) or not isinstance(value, str | int | float):
                raise fail(where, "a string", value)
            else:
                entry[key] = str(value)
    data["remotes"] = checked
    return data


EXECUTORS = ("local", "dask")
DASK_KEYS = frozenset({"scheduler", "retries"})


def _check_executor(data: dict[str, Any], fail: Any) -> None:
    """`executor: local|dask` and `dask: {scheduler: ADDRESS, retries: N}`, checked in place."""
    executor = data.get("executor")
    if executor is not None and executor not in EXECUTORS:
        raise fail("executor", f"one of {', '.join(EXECUTORS)}", executor)
    dask = data.get("dask")
    if dask is None:
        return
    if not isinstance(dask, dict):
        raise fail("dask", "a mapping (`scheduler`, `retries`)", dask)
    for key, value in dask.items():
        if key not in DASK_KEYS:
            raise fail(f"dask.{key}", f"one of the keys {', '.join(sorted(DASK_KEYS))}", key)
        if key == "scheduler" and not (isinstance(value, str) and value):
            raise fail("dask.scheduler", "an address such as tcp://host:8786", value)
        if key == "retries":
            number = _whole_number(value)
            if number is None or number < 0:
                raise fail("dask.retries", "a whole number of at least 0", value)
            dask[key] = number


class ExecutorConfig(NamedTuple):
    """Where `pivot run` executes stages, from the config (the CLI may override)."""

    executor: str = "local"
    scheduler: str | None = None
    retries: int = 1


def executor_config(project: Project) -> ExecutorConfig:
    config = load(project)
    dask = config.get("dask") or {}
    return ExecutorConfig(
        executor=config.get("executor") or "local",
        scheduler=dask.get("scheduler"),
        retries=dask.get("retries", 1),
    )


def _write(path: pathlib.Path, data: dict[str, Any]) -> None:
    import yaml

    clean = {k: v for k, v in data.items() if v not in (None, {})}
    text = yaml.safe_dump(clean, sort_keys=True, default_flow_style=False) if clean else ""
    # The local file may hold credentials: readable by its owner only.
    _fs.write_bytes(path, text.encode(), mode=0o600 if path.name == LOCAL_CONFIG_NAME else None)


def merge(shared: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """Merge two config mappings; `local` wins, remotes and `dask` merge key by key."""
    merged = copy.deepcopy(shared)
    for key, value in local.items():
        if key == "remotes":
            remotes = merged.setdefault("remotes", {}) or {}
            merged["remotes"] = remotes
            for name, options in (value or {}).items():
                remotes[name] = {**remotes.get(name, {}), **options}
        elif key == "dask" and isinstance(value, dict):
            merged["dask"] = {**(merged.get("dask") or {}), **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def link_mode(project: Project, given: str | None = None) -> str:
    """How outputs are placed: `given` (a command's --link), else `cache.link`, else copy."""
    if given is not None:
        return given
    return str((load(project).get("cache") or {}).get("link") or "copy")


def load(project: Project) -> dict[str, Any]:
    """The merged configuration of `project`."""
    shared_path, local_path = config_paths(project)
    shared = _read(shared_path)
    _check_no_secrets(shared, shared_path)
    return merge(shared, _read(local_path))


def _url_credentials(url: str) -> list[str]:
    from pivot.urls import url_credentials

    return url_credentials(url)


def _check_no_secrets(data: dict[str, Any], path: pathlib.Path) -> None:
    for name, options in (data.get("remotes") or {}).items():
        from pivot.urls import is_secret_option  # imported only when a remote is configured

        found = sorted(k for k in options if is_secret_option(k))
        in_url = [
            f"{what} in its {key}"
            for key in URL_KEYS
            for what in _url_credentials(str(options.get(key) or ""))
        ]
        if found or in_url:
            what = ", ".join(found + in_url)
            raise DefinitionError(
                f"The committed config file {path} holds a secret for remote {name!r} "
                f"({what}). Secrets belong in .pivot/{LOCAL_CONFIG_NAME}, which is not "
                f"committed: move them there and remove them from the history if pushed.",
                path=path,
                remote=name,
            )


def manage_gitignore(project: Project) -> bool:
    """Whether Pivot lists outputs and tracked data in `.gitignore` files (`gitignore:`,
    default true)."""
    return load(project).get("gitignore", True) is not False


GC_GRACE_HOURS = 24.0


def gc_grace_hours(project: Project) -> float:
    """How old a remote pack or index must be before `gc --remote` may delete it
    (`gc_grace_hours:`, default 24)."""
    value = load(project).get("gc_grace_hours")
    return GC_GRACE_HOURS if value is None else float(value)


def remotes(project: Project) -> dict[str, RemoteConfig]:
    """Every configured remote, by name."""
    config = load(project)
    result = {}
    for name, options in sorted((config.get("remotes") or {}).items()):
        url = options.get("url")
        if not url:
            shared_path, local_path = config_paths(project)
            raise DefinitionError(
                f"Remote {name!r} has no url in {shared_path} or {local_path}.",
                path=shared_path,
                remote=name,
                hint="set-remote-url",
            )
        rest = {k: v for k, v in options.items() if k != "url"}
        result[name] = RemoteConfig(name, str(url), rest)
    for name, values in _env_options(list(result)).items():
        result[name].options.update(values)
    return result


def _env_options(names: list[str]) -> dict[str, dict[str, str]]:
    """Options of the remotes `names` from the environment: `PIVOT_REMOTE_ORIGIN_PASSWORD`
    sets `password` of `origin` (over both files). A variable that two names could claim
    (`a` and `a_b`) belongs to the longer one."""
    from pivot.urls import ENV_PREFIX, env_name

    found: dict[str, dict[str, str]] = {}
    prefixes = sorted(((env_name(n), n) for n in names), key=lambda p: -len(p[0]))
    for variable, value in os.environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        for prefix, name in prefixes:
            key = variable[len(prefix) :].lower()
            if variable.startswith(prefix) and _OPTION_RE.match(key) and key != "url":
                found.setdefault(name, {})[key] = value
                break
    return found


def default_remote_name(project: Project) -> str | None:
    name = load(project).get("default_remote")
    return str(name) if name else None


def get_remote(project: Project, name: str | None = None) -> RemoteConfig:
    """The remote called `name`, or the default remote."""
    configured = remotes(project)
    if name is None:
        name = default_remote_name(project)
        if name is None:
            if len(configured) == 1:
                return next(iter(configured.values()))
            raise DefinitionError(
                "No remote given and no default remote set.", hint="choose-remote"
            )
    if name not in configured:
        known = ", ".join(configured) or "none"
        raise DefinitionError(
            f"Unknown remote {name!r} (configured: {known}).", remote=name, hint="add-remote"
        )
    return configured[name]


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise DefinitionError(
            f"Invalid remote name {name!r}: use letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit, at most 64 characters).",
            remote=name,
        )


def _check_value(name: str, key: str, value: Any, local: bool) -> Any:
    """`value` of option `key` as written to the config, or a DefinitionError. Whether the
    remote's backend takes `key` is checked by the caller (`remote.options`)."""
    from pivot.urls import env_name, is_secret_option

    if not _OPTION_RE.match(key):
        raise DefinitionError(
            f"Invalid option name {key!r} for remote {name!r}: option names are lower-case "
            f"letters, digits and '_'.",
            remote=name,
        )
    if is_secret_option(key) and not local:
        raise DefinitionError(
            f"Refusing to write {key} of remote {name!r} into the committed "
            f".pivot/{CONFIG_NAME}: it looks like a secret, and secrets must not be "
            f"committed. Use --local to store it in .pivot/{LOCAL_CONFIG_NAME}, or set the "
            f"environment variable {env_name(name)}{key.upper()}.",
            remote=name,
        )
    if key in URL_KEYS:
        value = str(value)
        if not value:
            raise DefinitionError(f"The {key} of remote {name!r} must not be empty.", remote=name)
        in_url = _url_credentials(value)
        if in_url and not local:
            raise DefinitionError(
                f"Refusing to write a {key} holding credentials ({', '.join(in_url)}) for "
                f"remote {name!r} into the committed .pivot/{CONFIG_NAME}.",
                remote=name,
                hint="local-credentials",
            )
    if key == "url":
        from pivot.urls import check_url

        check_url(value, name)
    if key in INT_KEYS:
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise DefinitionError(
                f"Option {key} of remote {name!r} must be an integer.", remote=name
            ) from None
        if value < 1:
            raise DefinitionError(
                f"Option {key} of remote {name!r} must be at least 1.", remote=name
            )
    elif key not in URL_KEYS:
        value = str(value)
    return value


def _edit(project: Project, local: bool) -> tuple[pathlib.Path, dict[str, Any]]:
    shared_path, local_path = config_paths(project)
    path = local_path if local else shared_path
    return path, _read(path)


def add_remote(
    project: Project, name: str, url: str, *, default: bool = False, local: bool = False
) -> RemoteConfig:
    """Add remote `name` at `url` (to the local file with `local=True`)."""
    _check_name(name)
    url = _check_value(name, "url", url, local)
    if name in remotes(project):
        raise DefinitionError(
            f"Remote {name!r} already exists.", remote=name, hint="change-remote-url"
        )
    path, data = _edit(project, local)
    data.setdefault("remotes", {})[name] = {"url": url}
    if default:
        data["default_remote"] = name
    _write(path, data)
    return get_remote(project, name)


def remove_remote(project: Project, name: str) -> None:
    """Remove remote `name` from both files (and as the default)."""
    if name not in remotes(project):
        raise DefinitionError(f"Unknown remote {name!r}; nothing to remove.", remote=name)
    for local in (False, True):
        path, data = _edit(project, local)
        changed = False
        if name in (data.get("remotes") or {}):
            del data["remotes"][name]
            changed = True
        if data.get("default_remote") == name:
            del data["default_remote"]
            changed = True
        if changed:
            _write(path, data)


def set_default_remote(project: Project, name: str, *, local: bool = False) -> None:
    if name not in remotes(project):
        raise DefinitionError(f"Unknown remote {name!r}.", remote=name, hint="add-remote")
    path, data = _edit(project, local)
    data["default_remote"] = name
    _write(path, data)


def modify_remote(
    project: Project,
    name: str,
    key: str,
    value: Any = None,
    *,
    local: bool = False,
    unset: bool = False,
) -> None:
    """Set (or with `unset=True` remove) option `key` of remote `name`."""
    configured = remotes(project)
    if name not in configured:
        raise DefinitionError(f"Unknown remote {name!r}.", remote=name, hint="add-remote")
    path, data = _edit(project, local)
    entry = data.setdefault("remotes", {}).setdefault(name, {})
    if unset:
        if key == "url":
            raise DefinitionError(
                f"The url of remote {name!r} cannot be unset; remove the remote.", remote=name
            )
        entry.pop(key, None)
        if not entry:
            del data["remotes"][name]
    else:
        entry[key] = _check_value(name, key, value, local)
    _write(path, data)


def list_remotes(project: Project) -> list[tuple[RemoteConfig, bool]]:
    """Each remote and whether it is the default."""
    default = default_remote_name(project)
    return [(r, r.name == default) for r in remotes(project).values()]
