"""A remote store: the few object operations Pivot needs, on a local folder, S3 (boto3,
see `s3.py`) or any other fsspec filesystem.

The layout of what is stored (packs, indexes) lives in `packs.py` and
`docs/remote-format.md`; this module only opens the store, names objects, moves bytes,
and turns library errors into one clear RemoteError that never shows a secret.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import pathlib
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from pivot import _fs
from pivot.cache.hashing import CHUNK, is_hash
from pivot.errors import (
    DefinitionError,
    MissingPackage,
    PivotError,
    RemoteCorrupt,
    RemoteError,
    RemoteIncomplete,
    RemoteUnreachable,
    not_writable,
    writing,
)
from pivot.remote.options import check_option, fs_class
from pivot.urls import (
    env_name,
    is_secret_option,
    redact_text,
    redact_url,
    s3_location,
    split_protocol,
    url_secret_values,
)

PACKS = "packs"
INDEX = "index"
LOCAL_PROTOCOLS = ("file", "local")
# Object stores: no directories to create, and each write already atomic (an object
# appears whole when its upload completes), so objects are written under their own name.
OBJECT_PROTOCOLS = frozenset({"memory", "gs", "gcs", "az", "abfs", "abfss", "s3", "s3a", "oss"})
# Filesystems holding one connection that threads must not share: one instance per thread.
ONE_CONNECTION_PROTOCOLS = frozenset({"ftp"})
TEMP_SUFFIX = ".tmp"
CONNECT_TIMEOUT = 5  # seconds to wait for a connection (S3's too), where a backend takes it
T = TypeVar("T")


class ObjectStore(Protocol):
    """Objects named by keys relative to the remote's root: one or more '/'-separated
    levels ("index/<id>", "packs/ab/<id>"). Every backend holds this contract, checked by
    tests/remote/conformance/ on a local folder, memory://, moto, SeaweedFS and real FTP,
    SFTP, WebDAV, GCS (emulator) and Azure (Azurite) servers.

    Errors: a missing object raises FileNotFoundError (a missing bucket too, with "bucket"
    in its message); a refused request raises PermissionError; anything else (no
    credentials, an unreachable endpoint) passes as the library raised it. `Remote` turns
    each into one RemoteError. No method leaves a partial object behind on error.

    Retries: the S3 client retries throttled and transient requests itself (botocore's
    standard mode); nothing else here retries. Every method may be retried as a whole:
    reads change nothing, and a put replaces the whole object (keys are content-named,
    so two writers of one key write the same bytes).
    """

    def names(self, folder: str) -> list[str]:
        """The last level of every object's key under `folder/`, at any depth, in no
        particular order; [] if there is none (or no such folder). Not a sibling folder
        whose name starts the same ("packs" never lists "packsx/..."). May list the temp
        names of uploads in progress: callers keep only the names they expect."""
        ...

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or bytes [start, end) of it (start < end): fewer, or none,
        if the object is shorter (a truncated pack reads short, never as an error)."""
        ...

    def get_file(self, key: str, dest: pathlib.Path) -> None:
        """Write the whole object into the local file `dest` with bounded memory (large
        objects in ranged parts). On error `dest` may hold part of it: the caller removes
        it."""
        ...

    def open_range(
        self, key: str, start: int, end: int | None
    ) -> contextlib.AbstractContextManager:
        """A binary stream of the object from byte `start`, read sequentially; it holds at
        least the bytes up to `end` (to the end if None) and may run past it: callers stop
        at `end`. Empty if `start` is at or past the end. A missing object raises on
        entering."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any object there; readers see the old
        object or all of the new one, never part."""
        ...

    def put_parts(self, key: str, parts: Iterable[bytes]) -> None:
        """Store the concatenation of `parts`, consumed as they come (bounded memory; every
        part but the last at least 5 MiB, S3's minimum); replaces as `put` does. If
        producing a part raises, nothing is stored, the old object stays, and no unfinished
        upload is left."""
        ...

    def clean_uploads(self, max_age: float) -> int:
        """Discard the unfinished uploads (of killed pushes) begun over `max_age` seconds
        ago; returns how many. An upload younger than that may belong to a push still
        running and is kept."""
        ...

    def stamped(self, folder: str) -> dict[str, tuple[int, float | None]]:
        """Like `names`, each with its size and last-modified time (epoch seconds; None
        when the backend does not say, which `gc --remote` reads as just written)."""
        ...

    def delete(self, key: str) -> None:
        """Remove object `key`; a missing one is not an error."""
        ...


class LocalStore:
    """A folder on this machine (or a mounted share): files written atomically."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def names(self, folder: str) -> list[str]:
        base = self.root / folder
        if not base.is_dir():
            return []
        return [p.name for p in base.rglob("*") if p.is_file()]

    def stamped(self, folder: str) -> dict[str, tuple[int, float | None]]:
        base = self.root / folder
        if not base.is_dir():
            return {}
        found: dict[str, tuple[int, float | None]] = {}
        for p in base.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                if p.is_file():
                    found[p.name] = (st.st_size, st.st_mtime)
        return found

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / key)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        with open(self.root / key, "rb") as handle:
            if start is None:
                return handle.read()
            handle.seek(start)
            return handle.read((end or 0) - start)

    def get_file(self, key: str, dest: pathlib.Path) -> None:
        shutil.copyfile(self.root / key, dest)

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, end: int | None) -> Iterator[BinaryIO]:
        with open(self.root / key, "rb") as handle:
            handle.seek(start)
            yield handle

    def put(self, key: str, data: bytes) -> None:
        _fs.write_bytes(self.root / key, data)

    def put_parts(self, key: str, parts: Iterable[bytes]) -> None:
        _fs.write_bytes(self.root / key, parts)

    def clean_uploads(self, max_age: float) -> int:
        """Remove the temp files of `put`/`put_parts` (`.<name>.<id>.tmp`) older than
        `max_age` seconds."""
        import time

        cutoff = time.time() - max_age
        removed = 0
        for tmp in self.root.rglob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if tmp.is_file() and tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
                    removed += 1
        return removed


class S3Objects:
    """The objects under `bucket/prefix` of an S3 endpoint (see `s3.py`)."""

    def __init__(self, bucket: str, prefix: str, options: dict[str, Any]) -> None:
        from pivot.remote.s3 import S3Store

        self.s3 = S3Store(bucket, options)
        self.prefix = prefix

    def full_key(self, key: str) -> str:
        """The S3 key of the remote's object `key`."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def names(self, folder: str) -> list[str]:
        return [k.rsplit("/", 1)[-1] for k in self.s3.list(self.full_key(folder))]

    def stamped(self, folder: str) -> dict[str, tuple[int, float | None]]:
        listed = self.s3.list_stamped(self.full_key(folder))
        return {k.rsplit("/", 1)[-1]: v for k, v in listed.items()}

    def delete(self, key: str) -> None:
        self.s3.delete(self.full_key(key))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        return self.s3.get(self.full_key(key), start, end)

    def get_file(self, key: str, dest: pathlib.Path) -> None:
        self.s3.get_file(self.full_key(key), str(dest))

    def open_range(
        self, key: str, start: int, end: int | None
    ) -> contextlib.AbstractContextManager:
        return self.s3.open_range(self.full_key(key), start, end)

    def put(self, key: str, data: bytes) -> None:
        self.s3.put(self.full_key(key), data)

    def put_parts(self, key: str, parts: Iterable[bytes]) -> None:
        self.s3.put_parts(self.full_key(key), parts)

    def clean_uploads(self, max_age: float) -> int:
        return self.s3.abort_uploads(f"{self.prefix}/" if self.prefix else "", max_age)


class FsspecObjects:
    """The objects under `root` of any fsspec filesystem (memory://, gs://, ftp://, ...).

    On an object store (`directories=False`) an object is written under its own name: the
    store shows it only once complete. On a filesystem with directories (ftp, sftp,
    webdav, ...) the parent directories are created once each, and an object is written
    under a temp name in its directory (`.<name>.<unix time>.<random>.tmp`) and renamed
    into place, so that a reader never sees part of it under its final name.
    """

    def __init__(
        self,
        create: Callable[[], Any],
        root: str,
        *,
        directories: bool = False,
        per_thread: bool = False,
    ) -> None:
        self._create = create
        self._fs: Any = None
        self._lock = threading.Lock()
        self._per_thread = threading.local() if per_thread else None
        self.root = root
        self.directories = directories
        self._made: set[str] = set()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, created (and for some, connected) on first use; one per
        thread for a filesystem that holds one connection (FTP)."""
        if self._per_thread is not None:
            if getattr(self._per_thread, "fs", None) is None:
                self._per_thread.fs = self._create()
            return self._per_thread.fs
        with self._lock:
            if self._fs is None:
                self._fs = self._create()
            return self._fs

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def names(self, folder: str) -> list[str]:
        path = self._path(folder)
        self.fs.invalidate_cache(path)  # a listing cached earlier would miss new objects
        try:
            found = self.fs.find(path)
        except FileNotFoundError:
            return []
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in found]

    def stamped(self, folder: str) -> dict[str, tuple[int, float | None]]:
        found: dict[str, tuple[int, float | None]] = {}
        for path, info in self.fs.find(self._path(folder), detail=True).items():
            name = path.rstrip("/").rsplit("/", 1)[-1]
            found[name] = (int(info.get("size") or 0), _modified(info))
        return found

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        path = self._path(key)
        if start is None:
            return self.fs.cat_file(path)
        if not self.directories:
            try:
                return self.fs.cat_file(path, start=start, end=end)
            except Exception:
                # Azure refuses a range that starts past the end (416): read as short.
                if start < self.fs.size(path):
                    raise
                return b""
        # Through a file object: not every such backend honours a range in cat_file
        # (sshfs reads the whole file).
        with self.fs.open(path, "rb") as handle:
            handle.seek(start)
            return handle.read((end or 0) - start)

    def get_file(self, key: str, dest: pathlib.Path) -> None:
        with self.fs.open(self._path(key), "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, end: int | None) -> Iterator[BinaryIO]:
        with self.fs.open(self._path(key), "rb") as handle:
            handle.seek(start)
            yield handle

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda path: self.fs.pipe_file(path, data))

    def put_parts(self, key: str, parts: Iterable[bytes]) -> None:
        # Spooled locally first: a failing producer must leave no object behind, and
        # not every fsspec writer can discard what it has begun to upload.
        with tempfile.TemporaryFile() as spool:
            for part in parts:
                spool.write(part)
            spool.seek(0)

            def upload(path: str) -> None:
                with self.fs.open(path, "wb") as target:
                    shutil.copyfileobj(spool, target, CHUNK)

            self._write(key, upload)

    def _write(self, key: str, upload: Callable[[str], None]) -> None:
        final = self._path(key)
        if not self.directories:
            upload(final)
            return
        parent, _, name = final.rpartition("/")
        if parent and parent not in self._made:
            self._makedirs(parent)
            self._made.add(parent)
        tmp = f"{parent}/.{name}.{int(time.time())}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            upload(tmp)
            self._rename(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    def _makedirs(self, folder: str) -> None:
        """Create `folder` and its parents; one that appeared meanwhile (another thread,
        another pusher) is fine, and so is a parent that did: then it tries again."""
        for attempt in range(3):
            try:
                self.fs.makedirs(folder, exist_ok=True)
                return
            except Exception:
                self.fs.invalidate_cache()
                if self.fs.isdir(folder):
                    return
                if attempt == 2:
                    raise

    def _rename(self, tmp: str, final: str) -> None:
        """Rename `tmp` over `final`; where the server refuses to replace a file (SFTP
        version 3, WebDAV), the old one is removed first (keys are content-named: only a repair
        replaces an object with other bytes)."""
        try:
            self.fs.mv(tmp, final)
        except Exception:
            self.fs.invalidate_cache()
            if not self.fs.exists(final):
                raise
            self.fs.rm_file(final)
            self.fs.mv(tmp, final)

    def clean_uploads(self, max_age: float) -> int:
        """Remove the temp objects of writes (`.<name>.<unix time>.<id>.tmp`) begun over
        `max_age` seconds ago; none exist on an object store (uploads are spooled locally
        first and written whole)."""
        if not self.directories:
            return 0
        cutoff = time.time() - max_age
        removed = 0
        for folder in (INDEX, PACKS):
            try:
                found = self.fs.find(self._path(folder))
            except FileNotFoundError:
                continue
            for path in found:
                parts = path.rsplit("/", 1)[-1].split(".")
                if len(parts) < 5 or parts[0] or f".{parts[-1]}" != TEMP_SUFFIX:
                    continue
                with contextlib.suppress(ValueError):
                    if int(parts[-3]) <= cutoff:
                        with contextlib.suppress(FileNotFoundError):
                            self.fs.rm_file(path)
                            removed += 1
        return removed


def _modified(info: dict[str, Any]) -> float | None:
    """An fsspec entry's last-modified time (epoch seconds), if the backend gives one."""
    import datetime

    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


@dataclass
class Remote:
    """One remote: its object store, and how to name it to the user."""

    store: ObjectStore
    root: str
    name: str
    url: str
    identity: str
    secrets: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    # ----- opening -----

    @property
    def display(self) -> str:
        """How to name this remote to the user: name and redacted url."""
        return f"{self.name!r} ({redact_url(self.url)})"

    # ----- object names -----

    @staticmethod
    def pack_key(pack_id: str) -> str:
        return f"{PACKS}/{pack_id[:2]}/{pack_id}"

    @staticmethod
    def index_key(index_id: str) -> str:
        return f"{INDEX}/{index_id}"

    # ----- operations -----

    def list_indexes(self) -> list[str]:
        """The ids of every index object on the remote (one listing). A local folder that
        does not exist is an error, not an empty remote: its url is wrong (often a relative
        one in a clone placed elsewhere), or nothing was pushed yet."""
        if isinstance(self.store, LocalStore) and not self.store.root.is_dir():
            typed = split_protocol(self.url)[1]
            relative = (
                ""
                if os.path.isabs(os.path.expanduser(typed))
                else (" (a relative url is relative to the project root)")
            )
            raise RemoteUnreachable(
                f"The remote {self.display} is the directory {self.store.root}{relative}, "
                f"which does not exist. Fix the remote's url, or push to it first if it is new.",
                remote=self.name,
                display=self.display,
            )
        with self._errors("list the indexes of"):
            names = self.store.names(INDEX)
        return sorted(n for n in names if is_hash(n))

    def create_folder(self) -> None:
        """Create a local folder remote that does not exist yet (a push does)."""
        if isinstance(self.store, LocalStore):
            with self._errors("create the folder of"):
                self.store.root.mkdir(parents=True, exist_ok=True)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(f"read {key} from"):
            return self.store.get(key)

    def get_head(self, key: str, size: int) -> bytes | None:
        """At most the first `size` bytes of object `key` (one ranged read), or None when
        it does not exist (nor its folder or bucket)."""
        with self._errors(f"read {key} from"):
            try:
                return self.store.get(key, 0, size)
            except FileNotFoundError:
                return None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of object `key`."""
        with self._errors(f"read {key} from"):
            data = self.store.get(key, start, end)
        if len(data) != end - start:
            raise RemoteCorrupt(
                f"Remote {self.display}: {key} is shorter than its index says "
                f"(asked bytes {start}-{end}, got {len(data)}). The pack is damaged; "
                f"push the affected outputs again from a machine that has them.",
                remote=self.name,
                display=self.display,
                key=key,
            )
        return data

    def get_file(self, key: str, dest: pathlib.Path) -> None:
        """Download object `key` into the local file `dest` with bounded memory; a refused
        write in `dest`'s folder is that folder's error (NotWritable), not the remote's."""
        with self._errors(f"read {key} from"), _local_writes(dest.parent), writing(dest):
            self.store.get_file(key, dest)

    def read_range(
        self, key: str, start: int, end: int | None, consume: Callable[[BinaryIO], T]
    ) -> T:
        """`consume` a stream of at most the bytes [start, end) of object `key` (to its end
        if `end` is None; bounded memory); a PivotError it raises passes unchanged."""
        with self._errors(f"read {key} from"), self.store.open_range(key, start, end) as src:
            return consume(src if end is None else _Limited(src, end - start))

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` as object `key`; readers see all of it or nothing."""
        with self._errors(f"write {key} to"):
            self.store.put(key, data)

    def put_parts(self, key: str, parts: Iterable[bytes]) -> None:
        """Store the concatenation of `parts` as object `key` while they are produced
        (bounded memory); if producing a part raises, nothing is stored."""
        with self._errors(f"write {key} to"):
            self.store.put_parts(key, parts)

    def clean_uploads(self, max_age: float) -> int:
        """Discard unfinished uploads of killed pushes begun over `max_age` seconds ago
        (S3 multipart uploads, a local remote's temp files); returns how many."""
        with self._errors("clean the unfinished uploads of"):
            return self.store.clean_uploads(max_age)

    def stamped(self, folder: str) -> dict[str, tuple[int, float | None]]:
        """Every object name under `folder` with its size and last-modified time."""
        with self._errors(f"list {folder} of"):
            return self.store.stamped(folder)

    def delete(self, key: str) -> None:
        """Remove object `key` (a missing one is not an error)."""
        with self._errors(f"delete {key} from"):
            self.store.delete(key)

    def _redact(self, text: str) -> str:
        return redact_text(text, self.secrets)

    @contextlib.contextmanager
    def _errors(self, action: str):
        try:
            yield
        except PivotError:
            raise
        except Exception as exc:
            self._raise(action, exc)

    def _raise(self, action: str, exc: BaseException) -> NoReturn:
        kind, message, hint = describe_error(self, action, exc)
        raise kind(
            self._redact(message), remote=self.name, display=self.display, hint=hint
        ) from None


@contextlib.contextmanager
def _local_writes(folder: pathlib.Path) -> Iterator[None]:
    """Turn a refused write of a file in the local `folder` into NotWritable."""
    try:
        yield
    except OSError as exc:
        names = (exc.filename, exc.filename2)
        ours = any(
            isinstance(n, str | bytes | os.PathLike)
            and os.path.dirname(os.fsdecode(n)) == str(folder)
            for n in names
        )
        refused = not_writable(exc) if ours else None
        if refused is None:
            raise
        raise refused from None


class _Limited(io.RawIOBase):
    """A reader that yields at most `remaining` bytes of `source`."""

    def __init__(self, source: BinaryIO, remaining: int) -> None:
        self.source = source
        self.remaining = remaining

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if n is None or n < 0 or n > self.remaining:
            n = self.remaining
        data = self.source.read(n)
        self.remaining -= len(data)
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def describe_error(
    remote: Remote, action: str, exc: BaseException
) -> tuple[type[RemoteError], str, str | None]:
    """What failed against `remote`: the error class, the message (saying what to try when
    that needs no command) and the CLI's hint (see `pivot.cli.advice`)."""
    kind = type(exc).__name__
    detail = str(exc).strip() or kind
    where = f"Cannot {action} remote {remote.display}"
    if kind in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
        return (
            RemoteUnreachable,
            f"{where}: no usable credentials ({detail}).",
            "s3-credentials",
        )
    if _login_refused(exc, kind, detail):
        prefix = env_name(remote.name)
        return (
            RemoteUnreachable,
            f"{where}: the server refused the login ({detail}). Check the user name and "
            f"password (or key) set for this remote: the options in .pivot/config.local.yaml, "
            f"or the environment variables {prefix}USERNAME / {prefix}PASSWORD.",
            None,
        )
    if _no_permission(kind, detail):
        return (
            RemoteUnreachable,
            f"{where}: permission denied ({detail}). The account this remote logs in with may "
            f"not write there: grant it write access to the remote's folder, or use another "
            f"account or path. Nothing was left under a final name on the remote.",
            None,
        )
    if isinstance(exc, PermissionError) or kind == "AccessDenied":
        return (
            RemoteUnreachable,
            f"{where}: access denied ({detail}). Check the credentials and permissions for "
            f"this remote (profile, environment variables or .pivot/config.local.yaml).",
            None,
        )
    if isinstance(exc, FileNotFoundError) and "bucket" in detail.lower():
        return (
            RemoteUnreachable,
            f"{where}: the bucket does not exist ({detail}).",
            "create-bucket",
        )
    if isinstance(exc, FileNotFoundError):
        return (
            RemoteIncomplete,
            f"{where}: an object is missing ({detail}). The remote may have been cleaned "
            f"or written by an interrupted tool; push again from a machine that has the data.",
            None,
        )
    connection_words = ("connect", "endpoint", "timed out", "timeout", "name resolution")
    if (
        kind in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError")
        or isinstance(exc, ConnectionError | TimeoutError)
        or any(w in detail.lower() for w in connection_words)
    ):
        endpoint = remote.options.get("endpoint_url")
        target = f"the endpoint {redact_url(str(endpoint))}" if endpoint else "the server"
        return (
            RemoteUnreachable,
            f"{where}: cannot reach {target} ({detail}).",
            "reach-endpoint",
        )
    return RemoteUnreachable, f"{where}: {kind}: {detail}", None


def open_remote(
    url: str,
    *,
    name: str = "remote",
    options: dict[str, Any] | None = None,
    base: pathlib.Path | None = None,
) -> Remote:
    """Open the store at `url`. Nothing is contacted until the first operation."""
    options = dict(options or {})
    protocol, rest = split_protocol(url)
    display = f"{name!r} ({redact_url(url)})"
    secrets = tuple(str(v) for k, v in options.items() if is_secret_option(k) and v)
    for where in (url, str(options.get("endpoint_url") or "")):
        secrets = (*secrets, *url_secret_values(where))

    if protocol in LOCAL_PROTOCOLS:
        try:
            path = pathlib.Path(rest).expanduser()
        except RuntimeError:
            raise DefinitionError(
                f"The remote {display} names a home directory that does not exist.",
                remote=name,
                hint="fix-remote-home",
            ) from None
        if not path.is_absolute():
            path = (base or pathlib.Path.cwd()) / path
        path = pathlib.Path(os.path.normpath(path))
        return Remote(
            store=LocalStore(path),
            root=str(path),
            name=name,
            url=url,
            identity=f"file://{path}",
            secrets=secrets,
            options=options,
        )

    root = rest.strip("/")
    store: ObjectStore
    if protocol in ("s3", "s3a"):
        bucket, prefix = s3_location(url, name)
        if importlib.util.find_spec("boto3") is None:
            raise MissingPackage(
                f"The remote {display} uses the {protocol}:// protocol, whose package is not "
                f"installed. Install it with `pip install boto3` (or `pip install pivot[s3]`).",
                package="boto3",
            )
        store = S3Objects(bucket, prefix, options)  # no import until a request
        endpoint = options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or ""
        identity = f"s3://{root}@{redact_url(str(endpoint))}"
    elif protocol == "memory":
        root = "/" + root
        memory = fs_class(protocol, display)(skip_instance_cache=False)
        store = FsspecObjects(lambda: memory, root)
        identity = f"memory://{root}"
    else:
        factory, root = _generic(url, name, display, options)
        store = FsspecObjects(
            factory,
            root.rstrip("/"),
            directories=protocol not in OBJECT_PROTOCOLS,
            per_thread=protocol in ONE_CONNECTION_PROTOCOLS,
        )
        identity = f"{protocol}://{redact_url(url).split('://', 1)[1].strip('/')}"
    return Remote(
        store=store,
        root=root.rstrip("/"),
        name=name,
        url=url,
        identity=identity,
        secrets=secrets,
        options=options,
    )


# HTTP 401 where each library's message puts the status (aiohttp: "401, message=...";
# webdav4: "received 401 (...)"; botocore: "An error occurred (401) when calling ..."),
# for an error rebuilt from that text: never digits inside a key, a path or a URL.
_STATUS_401 = re.compile(r"^(?:401, |received 401 \(|An error occurred \(401\) when calling )")


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an error or its explicit cause carries as a field (webdav4 and httpx
    `status_code`, aiohttp `status`, botocore's response metadata), else None."""
    seen: BaseException | None = exc
    while seen is not None:
        for field_name in ("status_code", "status"):
            value = getattr(seen, field_name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int) and not isinstance(status, bool):
                return status
        seen = seen.__cause__
    return None


def _login_refused(exc: BaseException, kind: str, detail: str) -> bool:
    """Whether the error says the server refused the credentials (FTP 530, SSH, HTTP 401)."""
    text = detail.lower()
    return (
        (kind == "error_perm" and detail.startswith("530"))
        or kind in ("PermissionDenied", "ClientAuthenticationError")
        or _http_status(exc) == 401
        or _STATUS_401.match(detail) is not None
        or "unauthorized" in text
        or "authentication failed" in text
        or "permission denied for user" in text  # sshfs's word for a refused SSH login
    )


def _no_permission(kind: str, detail: str) -> bool:
    """Whether the error says the account may not do this (FTP 550, HTTP 403)."""
    text = detail.lower()
    return (kind == "error_perm" and "privileges" in text) or (
        "403" in detail and "forbidden" in text
    )


def _generic(
    url: str, name: str, display: str, options: dict[str, Any]
) -> tuple[Callable[[], Any], str]:
    """How to create the fsspec filesystem of `url` (called on first use: FTP and SFTP
    connect when created) and the root path in it; the options checked and typed."""
    from pivot.remote.options import PIVOT_OPTIONS, WEBDAV_OPTIONS, WEBDAV_PROTOCOLS

    protocol = split_protocol(url)[0]
    cls = fs_class(protocol, display)  # a clear error when its package is missing
    given = {
        k: check_option(url, name, k, v)
        for k, v in options.items()
        if k not in PIVOT_OPTIONS and v is not None
    }
    if protocol in WEBDAV_PROTOCOLS:
        parts = urlsplit(url)
        scheme = "https" if protocol.endswith("s") else "http"
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        user = given.pop("user", None) or (unquote(parts.username or "") or None)
        password = given.pop("password", None) or (unquote(parts.password or "") or None)
        token = given.pop("token", None)
        if user is not None:
            given["auth"] = (user, password or "")
        if token is not None:
            given["headers"] = {"Authorization": f"Bearer {token}"}
        for key in WEBDAV_OPTIONS:
            given.pop(key, None)
        base_url = f"{scheme}://{netloc}"
        return (lambda: cls(base_url, **given)), parts.path.strip("/")
    if protocol in ("sftp", "ssh"):
        given.setdefault("connect_timeout", CONNECT_TIMEOUT)
    if protocol in ONE_CONNECTION_PROTOCOLS:
        given["skip_instance_cache"] = True
    if protocol in ("gs", "gcs") and given.get("endpoint_url"):
        # An emulator or proxy speaks only the JSON API: gcsfs's default class would first
        # ask it over gRPC for the bucket's type and wait a minute for the answer.
        from gcsfs.core import GCSFileSystem

        cls = GCSFileSystem
    root = cls._strip_protocol(url)
    from_url = cls._get_kwargs_from_urls(url)
    return (lambda: cls(**{**from_url, **given})), root
