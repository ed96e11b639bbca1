"""The default remote as `pivot run` and `pivot verify` see it, opened only when needed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pivot.errors import RemoteIncomplete

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pivot.project import Project
    from pivot.remote.index_cache import RemoteContents
    from pivot.remote.stores import Remote
    from pivot.remote.transfer import TransferSummary

Output = tuple[str, str]


class RemoteAccess:
    """Run records and blobs of one remote; its indexes are refreshed once per command."""

    def __init__(self, project: Project, name: str | None, jobs: int | None = None) -> None:
        self.project = project
        self.name = name
        self.jobs = jobs
        self._remote: Remote | None = None
        self._contents: RemoteContents | None = None
        # False for a command that promises not to contact the remote (`status` without
        # `--remote`): it is then trusted to hold what lock files name, never read.
        self.may_contact = True

    def is_configured(self) -> bool:
        """Whether there is a remote to use: a name was given or the project has one.

        Raises PivotError for a misconfiguration (an unknown name, no default among
        several remotes), which is the user's to fix rather than a reason to run offline.
        """
        from pivot import config

        if self.name is None and not any(p.exists() for p in config.config_paths(self.project)):
            return False
        if self.name is None and not config.remotes(self.project):
            return False
        config.get_remote(self.project, self.name)
        return True

    @property
    def contacted(self) -> bool:
        """Whether the remote's indexes have been read in this command."""
        return self._contents is not None

    @property
    def remote(self) -> Remote:
        if self._remote is None:
            self._remote = open_configured(self.project, self.name)
        return self._remote

    @property
    def display(self) -> str:
        return self.remote.display

    def contents(self) -> RemoteContents:
        """What the remote holds; raises PivotError when it cannot be reached."""
        if self._contents is None:
            from pivot.remote.transfer import remote_contents

            self._contents = remote_contents(self.project, self.remote)
        return self._contents

    def run_record(self, run_key: str) -> bytes | None:
        return self.contents().runs.get(run_key)

    def has_output(self, digest: str) -> bool:
        return self.contents().has_blob(digest)

    def fetch(
        self, outputs: Iterable[Output], known: RemoteContents | None = None
    ) -> TransferSummary:
        """Bring the outputs' blobs into the local cache; raise if any is unavailable.
        `known`: where the caller knows all their blobs lie (told by the cluster workers
        that pushed them): read from there without listing the remote, which a stale
        location or a failed read falls back to."""
        from pivot.errors import PivotError
        from pivot.remote.transfer import fetch_outputs

        outputs = list(outputs)
        summary = None
        if known is not None:
            try:
                summary = fetch_outputs(
                    self.project, self.remote, outputs, jobs=self.jobs, contents=known
                )
            except PivotError:
                summary = None
        if summary is None or summary.missing:
            summary = fetch_outputs(self.project, self.remote, outputs, jobs=self.jobs)
        if summary.missing:
            raise RemoteIncomplete(
                f"The remote {self.display} lacks {len(summary.missing)} blob(s) needed to "
                f"restore (first: {summary.missing[0][:16]}); were they pushed?",
                remote=self.remote.name,
                display=self.display,
                missing=tuple(summary.missing),
            )
        return summary

    def push(self, locks: Iterable[Any], run_keys: Iterable[str]) -> TransferSummary:
        from pivot.remote.transfer import push_locks

        return push_locks(self.project, self.remote, list(locks), run_keys, jobs=self.jobs)


def local_directory(project: Project, url: str) -> str | None:
    """The folder a local remote url names (a relative one is relative to the project
    root), or None for a url of another protocol."""
    import os

    from pivot.remote.stores import LOCAL_PROTOCOLS
    from pivot.urls import split_protocol

    protocol, rest = split_protocol(url)
    if protocol not in LOCAL_PROTOCOLS:
        return None
    return os.path.normpath(os.path.join(project.root, os.path.expanduser(rest)))


def open_configured(project: Project, name: str | None) -> Remote:
    """The remote `name` of the project's config (default: the default remote); a relative
    local folder is relative to the project root."""
    from pivot import config
    from pivot.remote.stores import open_remote

    remote = config.get_remote(project, name)
    return open_remote(remote.url, name=remote.name, options=remote.options, base=project.root)
