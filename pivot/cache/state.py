"""The sqlite state database `.pivot/state.db` (per machine, never committed): the stat
cache (path -> stat key and hash, so unchanged files are not hashed again) and small
key/value caches such as a remote's indexes; rebuilt empty when it is found damaged.

A stat-cache row is trusted only when its file was settled when read: changed before a
racy marker made before the read (`pivot._racy`; the 2 s rule where the marker does not
apply). A file changed in the same tick of the file system's clock as its reading could be
rewritten again within that tick keeping all four values; its row is kept "smudged" (a
size no file has: never matched), so the next command hashes the file again."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from pivot import _racy
from pivot.errors import DiskFull, NotWritable, not_writable, write_refusal
from pivot.project import db_files, is_utf8

log = logging.getLogger(__name__)  # the CLI shows warnings; see pivot.cli.main
F = TypeVar("F", bound=Callable[..., Any])
# One stat-cache row, as stored: (path, size, mtime_ns, inode, ctime_ns, hash). A stage's
# child sends those of its outputs in this form (plain tuples pickle ten times faster than
# `os.stat_result`s, which mattered at 100,000 files).
Row = tuple[str, int, int, int, int, str]
SMUDGED = -1  # the size of a row recorded unsettled (no file has it: never matched)

SCHEMA = """
DROP TABLE IF EXISTS stat_cache;
CREATE TABLE IF NOT EXISTS stat_cache_v2 (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether `exc` says the file is no (intact) database, not that it is busy or locked."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


# What sqlite says when the file system refuses it: a read-only database or folder (its
# journal files cannot be made), or a file it may not open.
_REFUSALS = (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM)


def _is_refusal(exc: sqlite3.DatabaseError) -> bool:
    """Whether `exc` says the database (or its folder) may not be written or opened."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _REFUSALS


def _rebuilt_if_damaged(method: F) -> F:
    """Run `method` holding the db's lock (one connection serves every thread); if the
    database file is damaged, rebuild it empty and run it again; if it may not be written,
    `refused` decides (an error, or caches kept in memory) and it runs again."""

    @functools.wraps(method)
    def wrapper(self: StateDB, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                if _is_damage(exc):
                    self.rebuild(exc)
                elif _is_refusal(exc) and not self.unsaved:
                    self.refused(exc)
                else:
                    raise
                return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class StateDB:
    """Per-machine state under `.pivot/state.db`; writes are batched until `commit`.

    Thread-safe: the stat cache is consulted and fed from several threads (pull's
    checkouts) while others read and write cached indexes. One connection serves them
    all, each use of it under one lock (sqlite3 allows a connection in one thread at a
    time: a `BEGIN` of one thread would otherwise take in another's statements); stat
    entries are recorded under it too, so a commit takes them whole.
    """

    def __init__(self, path: pathlib.Path, must_save: Callable[[], bool] = lambda: True) -> None:
        self.path = path
        # Asked when the file refuses writes: whether the command must save its caches
        # (it changes the project: NotWritable) or may keep them in memory (it only looks).
        self.must_save = must_save
        self.unsaved = False  # the file refused writes: caches live in memory until `close`
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._stats: dict[str, tuple[int, int, int, int, str]] | None = None
        self._pending: dict[str, tuple[int, int, int, int, str]] = {}
        self._kept: list[StagedRows] = []  # written by the next `commit`
        self._staged = 0  # temporary tables made so far (their names)

    def rebuild(self, exc: sqlite3.DatabaseError) -> None:
        """Replace a damaged database by an empty one: it only holds caches."""
        log.warning(
            f"The state database {self.path} is damaged ({exc}). It only caches file hashes, "
            f"the pipeline scan and remote indexes, so Pivot rebuilt it empty: files are "
            f"hashed and remote indexes read again, once."
        )
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self._stats = None
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as err:  # its folder refuses: as a refused write
                refused = not_writable(err)
                if refused is None or self.must_save():
                    raise refused or err from exc
                self.unsaved = True
                return

    def refused(self, exc: sqlite3.DatabaseError) -> None:
        """The database file (or its folder) refused `exc`'s write or open: raise the
        NotWritable naming it if the command must save its caches, else keep them in an
        empty database in memory for the rest of the command (the file is left as it is)."""
        if self.must_save():
            found = self._refusal()
            if found is None:
                raise exc
            raise found from exc
        log.debug(f"The state database {self.path} may not be written ({exc}): not saved.")
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self.unsaved = True
        self._conn = None  # `conn` opens the one in memory

    def _refusal(self) -> NotWritable | None:
        """The NotWritable naming the database's file (or its folder, where sqlite makes
        its journal files) that refuses writes; None if none does."""
        return write_refusal(db_files(self.path), str(self.path.parent))

    @property
    def conn(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None and not self.unsaved and self._refusal() is not None:
                self.unsaved = True  # read as well from memory: sqlite would leave files
            if self._conn is None and self.unsaved:
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                conn.executescript(SCHEMA)
                self._conn = conn
            if self._conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(SCHEMA)
                self._conn = conn
            return self._conn

    @_rebuilt_if_damaged
    def _load_stats(self) -> dict[str, tuple[int, int, int, int, str]]:
        with self._lock:
            if self._stats is None:
                rows = self.conn.execute(
                    "SELECT path, size, mtime_ns, inode, ctime_ns, hash FROM stat_cache_v2"
                )
                self._stats = {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}
            return self._stats

    def lookup(self, rel: str, st: os.stat_result) -> str | None:
        """The cached hash of `rel` if its size, mtime, inode and ctime are unchanged.

        ctime counts because tools like `tar -x` or `cp -p` restore size and mtime, and
        may reuse the inode, but cannot set the ctime.
        """
        stats = self._stats  # loaded once; no lock or wrapper per lookup after that
        if stats is None:
            stats = self._load_stats()
        row = self._pending.get(rel) or stats.get(rel)
        if row and row[:4] == _key(st):
            return row[4]
        return None

    def recorded(self, rel: str) -> bool:
        """Whether the stat cache holds an entry for `rel`, current or not."""
        return rel in self._pending or rel in self._load_stats()

    def record(self, rel: str, st: os.stat_result, digest: str, settled: bool = True) -> None:
        """Remember that `rel`, while its stat is `st`, hashes to `digest`; smudged unless
        `settled` (the file changed before a racy marker made before it was read)."""
        row = stat_row(rel, st, digest, settled)
        with self._lock:
            self._pending[rel] = row[1:]

    def record_rows(self, rows: Iterable[Row]) -> None:
        """`record` for rows built elsewhere (`stat_row`)."""
        pending = {r[0]: r[1:] for r in rows}
        with self._lock:
            self._pending.update(pending)

    def staging(self) -> StagedRows:
        """A place for the rows of files still being made (`StagedRows`)."""
        with self._lock:
            self._staged += 1
            return StagedRows(self, f"staged_{self._staged}")

    def keep(self, staged: StagedRows, rows: list[Row], limit: int) -> None:
        """Have the next `commit` write `staged` (holding `rows`): its files are in place;
        those changed at `limit` or later smudged (`settle`). If staging failed (an sqlite
        error, a rebuilt db), `rows` are recorded instead."""
        rows = settle(rows, limit)
        with self._lock:
            if not staged.broken:
                staged.smudge(limit)
            if staged.broken:
                self.record_rows(rows)
                return
            self._kept.append(staged)
            if self._stats is not None:
                self._stats.update((r[0], r[1:]) for r in rows)

    @_rebuilt_if_damaged
    def get(self, namespace: str, key: str) -> bytes | None:
        """The value stored under (namespace, key); None if there is none, or if it is not
        bytes (the column takes any type: a damaged or foreign db's text or number)."""
        row = self.conn.execute(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        ).fetchone()
        return row[0] if row and type(row[0]) is bytes else None

    @_rebuilt_if_damaged
    def put(self, namespace: str, key: str, value: bytes) -> None:
        with self._writing():
            self.conn.execute(
                "INSERT OR REPLACE INTO kv (namespace, key, value) VALUES (?, ?, ?)",
                (namespace, key, value),
            )

    @_rebuilt_if_damaged
    def delete(self, namespace: str, key: str) -> None:
        """Forget one key/value entry (nothing happens if it is absent)."""
        with self._writing():
            self.conn.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    @_rebuilt_if_damaged
    def update(
        self,
        puts: Iterable[tuple[str, str, bytes]] = (),
        deletes: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Put the (namespace, key, value) entries `puts` and forget the (namespace, key)
        entries `deletes`, in one transaction: another process sees all of it or none."""
        with self._writing(), self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO kv (namespace, key, value) VALUES (?, ?, ?)", puts
            )
            self.conn.executemany("DELETE FROM kv WHERE namespace = ? AND key = ?", deletes)

    @_rebuilt_if_damaged
    def items(self, namespace: str) -> list[tuple[str, bytes]]:
        """Every (key, value) entry of `namespace` whose key is text and value bytes (as
        `get`: others are a damaged or foreign db's), sorted by key."""
        return self.conn.execute(
            "SELECT key, value FROM kv WHERE namespace = ? AND typeof(key) = 'text' "
            "AND typeof(value) = 'blob' ORDER BY key",
            (namespace,),
        ).fetchall()

    @_rebuilt_if_damaged
    def commit(self, drop_staged: bool = True) -> None:
        """Write the batched stat entries and the kept staged rows in one transaction, in
        path order (the primary key's: 100,000 rows of a directory output, in the order its
        folder listed them, took twice as long to insert). Without `drop_staged`, the kept
        staged tables are left for the connection's close to free (`close`)."""
        kept, self._kept = self._kept, []
        if not self._pending and not kept:
            return
        pending = self._pending
        rows = [(k, *pending[k]) for k in sorted(pending)]
        try:
            self._insert(rows, kept)
        except UnicodeEncodeError:  # a name that is not UTF-8 (no lock names it): not cached
            for rel in [r[0] for r in rows if not is_utf8(r[0])]:
                del self._pending[rel]
            self._insert([(k, *v) for k, v in self._pending.items()], kept)
        finally:
            for staged in kept if drop_staged else ():
                staged.drop()
        if self._stats is not None:
            self._stats.update(self._pending)
        self._pending.clear()

    def _insert(self, rows: list[Row], kept: list[StagedRows]) -> None:
        """Insert or replace stat rows, and those `kept`, in one transaction."""
        with self._writing(), self.conn:
            self.conn.execute("BEGIN")
            for staged in kept:
                staged.copy_into_stat_cache()
            self.conn.executemany(
                "INSERT OR REPLACE INTO stat_cache_v2 "
                "(path, size, mtime_ns, inode, ctime_ns, hash) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn sqlite's "database or disk is full" into DiskFull naming the db; refuse a
        write kept in memory when the command must save its caches (`refused`)."""
        if self.unsaved and self.must_save():
            found = self._refusal()
            if found is not None:
                raise found
            self.unsaved = False  # it may be written now: the file again
            self._conn = None
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            raise DiskFull(self.path) from exc

    def close(self) -> None:
        with self._lock:
            self.commit(drop_staged=False)  # temporary tables go with the connection
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class StagedRows:
    """Stat-cache rows of files written into a hidden tree, gathered while the rest are
    written (so that the inserts are not all left for after the last file), in a temporary
    table of the db's connection: never in the database file, so a killed process leaves
    none of them behind. `keep` (once the files are in place) has the next `commit` write
    them in its transaction (or, if staging failed, records the rows the usual way); `drop`
    forgets them."""

    def __init__(self, state: StateDB, table: str) -> None:
        self.state = state
        self.table = f"temp.{table}"
        self.conn: sqlite3.Connection | None = None  # once the table exists
        self.broken = False

    def add(self, rows: list[Row]) -> None:
        """Stage `rows` (names that are not UTF-8 are left out)."""
        if not rows or self.broken:
            return
        state = self.state
        insert = f"INSERT INTO {self.table} VALUES (?, ?, ?, ?, ?, ?)"
        with state._lock:
            try:
                if self.conn is None:
                    self.conn = state.conn
                    self.conn.execute(f"CREATE TABLE {self.table} {_STAGED_COLUMNS}")
                elif self.conn is not state._conn:  # the db was rebuilt: the table is gone
                    self.broken = True
                    return
                try:
                    self.conn.executemany(insert, rows)
                except UnicodeEncodeError:
                    self.conn.executemany(insert, [r for r in rows if is_utf8(r[0])])
            except sqlite3.Error:
                self.broken = True

    def copy_into_stat_cache(self) -> None:
        """Insert or replace the staged rows into the stat cache (the caller's transaction)."""
        if self.conn is not None and not self.broken and self.conn is self.state._conn:
            self.conn.execute(
                f"INSERT OR REPLACE INTO stat_cache_v2 "
                f"SELECT * FROM {self.table} ORDER BY path"  # the key's order: see `commit`
            )

    def smudge(self, limit: int) -> None:
        """Smudge the staged rows of files changed at `limit` or later (`settle`)."""
        with self.state._lock:
            if self.conn is None or self.broken or self.conn is not self.state._conn:
                return
            try:
                self.conn.execute(
                    f"UPDATE {self.table} SET size = {SMUDGED} WHERE max(mtime_ns, ctime_ns) >= ?",
                    (limit,),
                )
            except sqlite3.Error:
                self.broken = True

    def drop(self) -> None:
        """Forget the staged rows."""
        with self.state._lock:
            conn, self.conn, self.broken = self.conn, None, True
            if conn is not None and conn is self.state._conn:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"DROP TABLE IF EXISTS {self.table}")


# No key: `INSERT OR REPLACE` into the stat cache orders and deduplicates them once.
_STAGED_COLUMNS = (
    "(path TEXT, size INTEGER, mtime_ns INTEGER, inode INTEGER, ctime_ns INTEGER, hash TEXT)"
)


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def stat_row(rel: str, st: os.stat_result, digest: str, settled: bool = True) -> Row:
    """The stat-cache row saying that `rel`, while its stat is `st`, hashes to `digest`;
    smudged (never matched) unless `settled`."""
    size = st.st_size if settled else SMUDGED
    return (rel, size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest)


def settle(rows: list[Row], limit: int) -> list[Row]:
    """`rows` with those of files changed at `limit` (an `_racy` marker's time, or a wall
    clock's time minus its margin: `settled_limit`) or later smudged."""
    return [r if r[2] < limit and r[4] < limit else (r[0], SMUDGED, *r[2:]) for r in rows]


def settled_limit(made: tuple[int, int] | None, wall_ns: int, top: str) -> int:
    """The time before which the files under `top` (a file or folder), stat-ed after the
    racy marker `made` and the wall clock's `wall_ns`, changed to be settled: the marker's
    when it is on their device (`top`'s, with no file system mounted within), else
    `_racy.WALL_NS` before `wall_ns`."""
    if made is None:
        return wall_ns - _racy.WALL_NS
    try:
        st = os.stat(top)
    except OSError:
        return wall_ns - _racy.WALL_NS
    if st.st_dev == made[0] and not (stat.S_ISDIR(st.st_mode) and _racy.mounted_within(top)):
        return made[1]
    return wall_ns - _racy.WALL_NS
