"""The advice sentence the command line adds to an error: which `pivot` command (or other
step) fixes it. Deep layers say what is wrong; only this module names commands."""

from __future__ import annotations

from pivot.errors import PivotError

# Keyed by `PivotError.hint`; formatted with the error's attributes.
HINTS = {
    "disk-full": (
        "Free some space (`pivot gc` removes cache objects no lock file needs) and run the "
        "command again."
    ),
    "init": "Run `pivot init` at the top of your project first.",
    "init-again": "Then run `pivot init` again.",
    "list-all": "`pivot list --all` shows every stage.",
    "verbose": "`pivot --verbose` shows the full traceback.",
    "add-default-remote": "Add one with `pivot remote add --default NAME URL`.",
    "choose-remote": (
        "Add one with `pivot remote add --default NAME URL`, set one with "
        "`pivot remote default NAME`, or pass `-r NAME`."
    ),
    "add-remote": "Add it with `pivot remote add {remote} URL`.",
    "set-remote-url": "Set one with `pivot remote modify {remote} url <URL>` or remove it.",
    "change-remote-url": (
        "Change it with `pivot remote modify {remote} url URL` or remove it first."
    ),
    "fix-remote-home": "Fix the url with `pivot remote modify {remote} url PATH`.",
    "fix-bucket": "Fix the url with `pivot remote modify {remote} url s3://BUCKET/PREFIX`.",
    "create-bucket": (
        "Create it, or fix the url with `pivot remote modify {remote} url s3://BUCKET/PREFIX`."
    ),
    "reach-endpoint": (
        "Check the network, that the server is running, and the endpoint_url "
        "(`pivot remote modify {remote} endpoint_url URL`)."
    ),
    "s3-credentials": (
        "Use an AWS profile (`pivot remote modify {remote} profile NAME`), the environment "
        "variables AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or `pivot remote modify "
        "--local {remote} access_key_id ...` and `secret_access_key ...`."
    ),
    "s3-options": (
        "Set options with `pivot remote modify {remote} KEY VALUE` (endpoint_url, region, "
        "profile; credentials with --local) and remove the query from the url."
    ),
    "local-credentials": (
        "Use --local, or keep the credentials out of the url (options set with `pivot remote "
        "modify --local`, a profile or environment variables)."
    ),
    "config-not-utf8": "Fix it, or delete it and add the remotes again (`pivot remote add ...`).",
    "pull-or-run": (
        "Run `pivot pull` to fetch them from the remote, or `pivot run` to rebuild them."
    ),
    "run-or-pull": "Run `pivot run` to rebuild it, or `pivot pull` to fetch it from a remote.",
    "track-raw-data": (
        "If it is raw data, track it where it exists (`pivot track {path}`) and commit the record."
    ),
    "retrack-folder": (
        "If its record should hold the file, put the folder back (`pivot checkout {path}`, or "
        "`pivot pull {path}` when the local cache lacks it); else track the folder again where "
        "it holds the file (`pivot track {path}`) and commit the record."
    ),
    "rerun-stage": "Run the stage that produces it again (`pivot run --force STAGE`).",
    "repush": (
        "Re-run the stage that produced it (`pivot run --force STAGE`) or pull it from another "
        "remote, then push again."
    ),
    "delete-pack-index": "Delete the index (or run `pivot gc`), then pull again.",
    "rewrite-lock": (
        "Fix or delete the lock file that should not name it (one you did not write yourself "
        "may have been crafted), or run `pivot run` to rewrite it."
    ),
}


def with_advice(message: str, hint: str | None, data: dict[str, object] | None = None) -> str:
    """`message` followed by the advice named `hint` (formatted with `data`), if any."""
    if hint is None:
        return message
    return f"{message} {HINTS[hint].format_map(data or {})}"


def paragraph(exc: PivotError) -> str:
    """What the user reads of `exc`: its message, then the advice for its hint."""
    return with_advice(str(exc), exc.hint, vars(exc))


def stage_failure(detail: str, cause: PivotError | None) -> str:
    """What the user reads of a failed stage: its detail, then the advice for its cause."""
    if cause is None:
        return detail
    return with_advice(detail, cause.hint, vars(cause))
