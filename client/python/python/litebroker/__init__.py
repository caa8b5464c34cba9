"""litebroker: one writer for a SQLite file that several app instances share.

Code written for the ``reader()``/``writer()`` connection-factory pattern runs
unchanged with one import changed::

    from litebroker import get_connection_factory

    factory = get_connection_factory()            # data/app.db
    with factory.reader() as conn:                # this process's own read-only connection
        rows = conn.execute("SELECT * FROM skus").fetchall()
    with factory.writer() as conn:                # a write session at the database's broker
        conn.execute("INSERT INTO skus (sku, qty) VALUES (?, ?)", ("A1", 5))
        conn.commit()

Reads never wait for the broker and work without one. Writes go to the broker
(``litebrokerd``), the only process that writes the file, so instances take turns
instead of failing with "database is locked".

The exceptions subclass the standard ``sqlite3`` ones, so ``except
sqlite3.OperationalError`` keeps working; a database locked by another program
through the whole retry schedule raises :class:`DatabaseLockedError`, a write with
no broker running raises :class:`BrokerUnavailableError`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from . import _litebroker as _native

__version__ = _native.__version__

__all__ = [
    "get_connection_factory",
    "open_connection",
    "retry_on_locked",
    "get_active_connections_count",
    "ConnectionFactory",
    "Connection",
    "ReadConnection",
    "WriteConnection",
    "AutoConnection",
    "Cursor",
    "Row",
    "Watch",
    "ChangeEvent",
    "TableChange",
    "Warning",
    "Error",
    "InterfaceError",
    "DatabaseError",
    "DataError",
    "OperationalError",
    "IntegrityError",
    "InternalError",
    "ProgrammingError",
    "NotSupportedError",
    "DatabaseLockedError",
    "BrokerUnavailableError",
    "WriterTimeoutError",
    "LOCKED_USER_TEXT",
    "RETRY_BASE_DELAY",
    "RETRY_MAX_DELAY",
    "DEFAULT_DB",
]

log = logging.getLogger("litebroker")

DEFAULT_DB = "data/app.db"
#: What the user is told when another program kept the database locked.
LOCKED_USER_TEXT: str = _native.LOCKED_USER_TEXT
#: The retry schedule: 0.5 s doubling per retry, capped at 5 s.
RETRY_BASE_DELAY = 0.5
RETRY_MAX_DELAY = 5.0

# DB-API 2.0 module globals.
apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"

# ----- exceptions -------------------------------------------------------------------
# Each subclasses the sqlite3 class of the same name and litebroker's own base, so
# both `except sqlite3.OperationalError` and `except litebroker.Error` catch them.
#
# Every exception raised by the broker path carries: `detail` (the full technical
# cause), `kind` (the broker's error class, e.g. "locked", "constraint", or None)
# and `sqlite_errorcode` (SQLite's extended result code, or None).

Warning = sqlite3.Warning


class Error(sqlite3.Error):
    """Base of every litebroker database error."""


class InterfaceError(sqlite3.InterfaceError, Error):
    """The client and the broker could not understand each other."""


class DatabaseError(sqlite3.DatabaseError, Error):
    """An error about the database."""


class DataError(sqlite3.DataError, DatabaseError):
    """A value or statement exceeded a limit."""


class OperationalError(sqlite3.OperationalError, DatabaseError):
    """SQL that failed to run (syntax, missing table), a lock, no broker…"""


class IntegrityError(sqlite3.IntegrityError, DatabaseError):
    """A constraint (UNIQUE, FOREIGN KEY, NOT NULL, CHECK) rejected the write."""


class InternalError(sqlite3.InternalError, DatabaseError):
    """An unexpected failure inside the broker."""


class ProgrammingError(sqlite3.ProgrammingError, DatabaseError):
    """Wrong use: parameter count, a closed connection, a statement not allowed."""


class NotSupportedError(sqlite3.NotSupportedError, DatabaseError):
    """Not supported through litebroker."""


class DatabaseLockedError(OperationalError):
    """Another program held the database locked through the whole retry schedule.

    Nothing of the failing call was applied. ``str(e)`` is the text to show the
    user (:data:`LOCKED_USER_TEXT`); ``e.detail`` says who held it and how long
    the broker waited.
    """


class BrokerUnavailableError(OperationalError):
    """No broker serves writes for the database now (none runs, it is shutting
    down or refuses writes, or the connection broke). Reads still work."""


class WriterTimeoutError(OperationalError, TimeoutError):
    """The writer was not free within the timeout; the message names who holds
    it. Both a ``TimeoutError`` and a ``sqlite3.OperationalError``."""


_native._register_errors(
    {
        cls.__name__: cls
        for cls in (
            InterfaceError,
            DatabaseError,
            DataError,
            OperationalError,
            IntegrityError,
            InternalError,
            ProgrammingError,
            NotSupportedError,
            DatabaseLockedError,
            BrokerUnavailableError,
            WriterTimeoutError,
        )
    }
)

# ----- rows and cursors -----------------------------------------------------------


class Row(tuple):
    """A row with access by index and by column name (case-insensitive), like
    ``sqlite3.Row``; also a tuple. Set ``conn.row_factory = litebroker.Row`` (or
    ``sqlite3.Row``, which is taken to mean this)."""

    __slots__ = ()
    _columns: Tuple[str, ...] = ()

    def __new__(cls, cursor: "Cursor", values: tuple) -> "Row":
        if cls is Row:
            cls = cursor._row_class_for()
        return tuple.__new__(cls, values)

    def __init__(self, cursor: "Cursor", values: tuple) -> None:
        pass

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            k = key.lower()
            for i, name in enumerate(self._columns):
                if name.lower() == k:
                    return tuple.__getitem__(self, i)
            raise IndexError(f"No item with that key: {key!r}")
        return tuple.__getitem__(self, key)

    def keys(self) -> list:
        return list(self._columns)

    def __repr__(self) -> str:
        return "<litebroker.Row " + repr(dict(zip(self._columns, self))) + ">"


class Cursor:
    """The result of ``conn.execute(…)``: ``fetchone``, ``fetchmany``,
    ``fetchall``, iteration, ``description``, ``rowcount``, ``lastrowid``."""

    arraysize = 1

    def __init__(self, connection: "Connection") -> None:
        self.connection = connection
        self.description: Optional[Tuple[Tuple[Any, ...], ...]] = None
        self.rowcount = -1
        self.lastrowid: Optional[int] = None
        self.row_factory = connection.row_factory
        self._rows: list = []
        self._pos = 0
        self._row_class = None

    # DB-API
    def execute(self, sql: str, parameters: Any = ()) -> "Cursor":
        self.connection._check_open()
        self.connection._run(self, sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Any) -> "Cursor":
        self.connection._check_open()
        self.connection._run_many(self, sql, seq_of_parameters)
        return self

    def executescript(self, sql_script: str) -> "Cursor":
        self.connection._check_open()
        self.connection._run_script(self, sql_script)
        return self

    def _fill(self, answer: tuple) -> None:
        columns, rows, changes, lastrowid = answer
        self.description = tuple((c, None, None, None, None, None, None) for c in columns) if columns else None
        self._rows = rows
        self._pos = 0
        self._row_class = None
        self.rowcount = changes if columns is None else -1
        if lastrowid:
            self.lastrowid = lastrowid

    def _make(self, values: tuple):
        rf = self.row_factory
        if rf is None:
            return values
        if rf is Row or rf is sqlite3.Row:
            return tuple.__new__(self._row_class_for(), values)
        return rf(self, values)

    def _row_class_for(self) -> type:
        """Row with this result's column names (one class per result)."""
        if self._row_class is None:
            cols = tuple(d[0] for d in self.description or ())
            self._row_class = type("Row", (Row,), {"__slots__": (), "_columns": cols, "__module__": __name__})
        return self._row_class

    def fetchone(self):
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return self._make(row)

    def fetchmany(self, size: Optional[int] = None) -> list:
        n = self.arraysize if size is None else size
        chunk = self._rows[self._pos : self._pos + n]
        self._pos += len(chunk)
        return [self._make(r) for r in chunk]

    def fetchall(self) -> list:
        chunk = self._rows[self._pos :]
        self._pos = len(self._rows)
        return [self._make(r) for r in chunk]

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        self._rows = []
        self._pos = 0

    def setinputsizes(self, sizes: Any) -> None:
        pass

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        pass


# ----- connections ----------------------------------------------------------------

_TX = re.compile(
    r"^\s*(?:(?P<begin>BEGIN)(?:\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE))?(?:\s+TRANSACTION)?"
    r"|(?P<commit>COMMIT|END)(?:\s+TRANSACTION)?"
    r"|(?P<rollback>ROLLBACK)(?:\s+TRANSACTION)?)\s*;?\s*$",
    re.IGNORECASE,
)

# Writes committed by this thread, so that retry_on_locked can tell whether an
# attempt already applied something before it failed.
_local = threading.local()


def _count_commit(n: int = 1) -> None:
    _local.commits = getattr(_local, "commits", 0) + n


class Connection:
    """What the factory's context managers yield: the ``sqlite3.Connection``
    methods apps use (``execute``, ``executemany``, ``executescript``,
    ``cursor``, ``commit``, ``rollback``, ``close``, ``row_factory``)."""

    def __init__(self, factory: "ConnectionFactory") -> None:
        self._factory = factory
        self.row_factory: Optional[Callable[..., Any]] = None
        self._closed = False
        self.total_changes = 0

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed database.")

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> Cursor:
        return self.cursor().executescript(sql_script)

    def commit(self) -> None:
        self._check_open()

    def rollback(self) -> None:
        self._check_open()

    def close(self) -> None:
        self._closed = True

    @property
    def in_transaction(self) -> bool:
        return False

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    # subclasses
    def _run(self, cur: Cursor, sql: str, params: Any) -> None:
        raise NotImplementedError

    def _run_many(self, cur: Cursor, sql: str, seq: Any) -> None:
        total, last = 0, None
        for p in seq:
            self._run(cur, sql, p)
            total += max(cur.rowcount, 0)
            last = cur.lastrowid
        cur.rowcount, cur.lastrowid = total, last

    def _run_script(self, cur: Cursor, script: str) -> None:
        raise NotImplementedError


class ReadConnection(Connection):
    """This process's own read-only connection (no broker needed). A statement
    that writes fails with SQLite's "attempt to write a readonly database"."""

    def _run(self, cur: Cursor, sql: str, params: Any) -> None:
        if _TX.match(sql):
            cur._fill((None, [], -1, 0))
            return
        cur._fill(self._factory._db().query(sql, params))

    def _run_script(self, cur: Cursor, script: str) -> None:
        for stmt in _split(script):
            self._run(cur, stmt, ())


class WriteConnection(Connection):
    """A write session at the broker: the writer is held for the ``with`` block.
    ``commit()`` commits and the next statement begins a new transaction in the
    same session; ``BEGIN``/``BEGIN IMMEDIATE`` are accepted and do nothing (the
    session began one already); ``COMMIT``/``ROLLBACK`` as SQL do what
    ``commit()``/``rollback()`` do. Reads inside go through the session and see
    its own writes."""

    def __init__(self, factory: "ConnectionFactory", session: Any) -> None:
        super().__init__(factory)
        self._session = session
        self._pending = False

    @property
    def in_transaction(self) -> bool:
        return bool(self._session.in_transaction)

    def _run(self, cur: Cursor, sql: str, params: Any) -> None:
        tx = _TX.match(sql)
        if tx:
            if tx.group("commit"):
                self.commit()
            elif tx.group("rollback"):
                self.rollback()
            cur._fill((None, [], -1, 0))
            return
        answer = self._session.execute(sql, params)
        cur._fill(answer)
        if answer[0] is None:
            self._pending = True
            self.total_changes += answer[2]

    def _run_many(self, cur: Cursor, sql: str, seq: Any) -> None:
        changes, last = self._session.execute_many(sql, seq)
        self._pending = True
        self.total_changes += changes
        cur._fill((None, [], changes, last))

    def _run_script(self, cur: Cursor, script: str) -> None:
        # Transaction control in the script is the session's: kept out of what is sent.
        stmts = [s for s in _split(script) if not _TX.match(s)]
        if stmts:
            cur._fill(self._session.execute(";\n".join(stmts)))
            self._pending = True

    def commit(self) -> None:
        self._check_open()
        self._session.commit()
        if self._pending:
            _count_commit()
        self._pending = False

    def rollback(self) -> None:
        self._check_open()
        self._session.rollback()
        self._pending = False

    def close(self) -> None:
        """Rolls back what is not committed and ends the session."""
        if not self._closed:
            self._closed = True
            self._session.close(commit=False)


class AutoConnection(Connection):
    """The one-off connection of :func:`open_connection`: each statement on its
    own, committed as it runs. Reads (SQLite's own verdict) run on this
    process's read-only connection; writes go to the broker exactly once (a
    request id, so a resend after a lost answer cannot apply them twice).
    ``BEGIN`` opens a write session until ``COMMIT``/``ROLLBACK``."""

    def __init__(self, factory: "ConnectionFactory") -> None:
        super().__init__(factory)
        self._writer: Optional[WriteConnection] = None
        self._release: Optional[Callable[[], None]] = None

    @property
    def in_transaction(self) -> bool:
        return self._writer is not None

    def _run(self, cur: Cursor, sql: str, params: Any) -> None:
        tx = _TX.match(sql)
        if tx:
            if tx.group("begin"):
                if self._writer is None:
                    self._writer, self._release = self._factory._open_writer(None)
                    self._writer.row_factory = self.row_factory
            elif tx.group("commit"):
                self.commit()
            else:
                self.rollback()
            cur._fill((None, [], -1, 0))
            return
        if self._writer is not None:
            self._writer._run(cur, sql, params)
            return
        db = self._factory._db()
        if db.is_read_only(sql):
            cur._fill(db.query(sql, params))
        else:
            cur._fill(db.execute(sql, params))
            self.total_changes += max(cur.rowcount, 0)
            _count_commit()

    def _run_many(self, cur: Cursor, sql: str, seq: Any) -> None:
        if self._writer is not None or _TX.match(sql):
            super()._run_many(cur, sql, seq)
            return
        # Outside a transaction: the rows go to the broker as one streamed transaction.
        changes, last, _rows = self._factory._db().execute_many(sql, seq, None)
        cur._fill((None, [], changes, last))
        self.total_changes += changes
        _count_commit()

    def _run_script(self, cur: Cursor, script: str) -> None:
        if self._writer is not None:
            self._writer._run_script(cur, script)
            return
        changes, last = self._factory._db().execute_script(script)
        cur._fill((None, [], changes, last))
        _count_commit()

    def _end(self, commit: bool) -> None:
        w, release = self._writer, self._release
        self._writer = self._release = None
        if w is not None:
            try:
                (w.commit if commit else w.rollback)()
            finally:
                w.close()
                if release:
                    release()

    def commit(self) -> None:
        self._check_open()
        self._end(True)

    def rollback(self) -> None:
        self._check_open()
        self._end(False)

    def close(self) -> None:
        if not self._closed:
            self._end(False)
            self._closed = True


def _split(script: str) -> list:
    """Splits a script into complete statements (SQLite's own completeness test)."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                out.append(buf.strip().rstrip(";").strip())
            buf = ""
    if buf.strip(" \t\r\n;"):
        out.append(buf.strip().rstrip(";").strip())
    return out


# ----- the factory ----------------------------------------------------------------

# Native handles of a parent process, kept (never dropped) in a forked child:
# dropping them there would close or talk on the parent's broker connections.
_inherited: list = []


class ConnectionFactory:
    """Readers and writers for one database; share one per process (it is safe
    to use from many threads). A child process (``multiprocessing``, fork or
    spawn) opens its own connections: the native handle is made lazily per
    process id.

    Options: ``client_name`` (shown by ``litebroker connections``), ``timeout``
    (seconds per broker call, waits and retries included; 30), ``socket``,
    ``autostart`` (start ``litebrokerd`` when none runs), ``broker`` (its path;
    implies ``autostart``).
    """

    def __init__(
        self,
        db_path: "os.PathLike[str] | str" = DEFAULT_DB,
        *,
        client_name: Optional[str] = None,
        timeout: float = 30.0,
        socket: Optional[str] = None,
        autostart: bool = False,
        broker: "os.PathLike[str] | str | None" = None,
    ) -> None:
        self.db_path = os.fspath(db_path)
        self._options = dict(
            client_name=client_name or _default_client_name(),
            timeout=float(timeout),
            socket=socket,
            autostart=bool(autostart),
            broker=os.fspath(broker) if broker is not None else None,
        )
        self._pid = -1
        self._native: Any = None
        self._lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._writer_holder: Optional[Tuple[str, float]] = None

    def __reduce__(self):
        opts = dict(self._options)
        return (_rebuild_factory, (self.db_path, opts))

    def __repr__(self) -> str:
        return f"<litebroker.ConnectionFactory {self.db_path!r}>"

    # The native handle of this process.
    def _db(self) -> Any:
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    if self._native is not None:
                        _inherited.append(self._native)
                        # A lock object copied in a fork may be held by a thread
                        # that does not exist in the child.
                        self._writer_lock = threading.Lock()
                        self._writer_holder = None
                    self._native = _native.Db(self.db_path, **self._options)
                    self._pid = pid
        return self._native

    # ---- reads
    @contextmanager
    def reader(self) -> Iterator[ReadConnection]:
        """A read-only connection of this process (no broker needed)."""
        conn = ReadConnection(self)
        try:
            yield conn
        finally:
            conn.close()

    # ---- writes
    def _open_writer(self, timeout: Optional[float]) -> Tuple[WriteConnection, Callable[[], None]]:
        timeout = 10.0 if timeout is None else float(timeout)
        db = self._db()
        started = time.monotonic()
        if not self._writer_lock.acquire(timeout=max(timeout, 0)):
            holder = self._writer_holder
            who = (
                f"thread {holder[0]!r} of this process (pid {os.getpid()}) has held it for "
                f"{time.monotonic() - holder[1]:.1f} s"
                if holder
                else f"another thread of this process (pid {os.getpid()}) holds it"
            )
            raise WriterTimeoutError(f"timed out after {timeout:.1f} s waiting for the writer: {who}")
        self._writer_holder = (threading.current_thread().name, time.monotonic())
        try:
            left = max(timeout - (time.monotonic() - started), 0.001)
            session = db.session(left)
            session.begin()
        except BaseException:
            self._writer_holder = None
            self._writer_lock.release()
            raise

        def release() -> None:
            self._writer_holder = None
            self._writer_lock.release()

        return WriteConnection(self, session), release

    @contextmanager
    def writer(self, timeout: Optional[float] = 10) -> Iterator[WriteConnection]:
        """The writer for the ``with`` block: an exclusive write session at the
        broker (and the only writer context of this process). Leaving the block
        normally commits what is pending; leaving it by an exception rolls back.
        Waiting longer than ``timeout`` seconds for the writer raises
        :class:`WriterTimeoutError` (a ``TimeoutError``) naming who holds it."""
        conn, release = self._open_writer(timeout)
        try:
            yield conn
        except BaseException:
            try:
                conn.rollback()
            except Error:
                log.warning("rollback after an exception failed (the broker rolls back by itself)", exc_info=True)
            raise
        else:
            conn.commit()
        finally:
            try:
                conn.close()
            finally:
                release()

    def execute(self, sql: str, parameters: Any = (), *, idempotent: bool = False, timeout: Optional[float] = None) -> Cursor:
        """One write at the broker, exactly once: it carries a request id kept
        across resends and "locked" retries, so it never applies twice. Mark an
        UPSERT that sets values ``idempotent=True`` to send it without one.
        Returns a cursor (``rowcount``, ``lastrowid``, rows of ``RETURNING``)."""
        cur = Cursor(_Detached(self))
        cur._fill(self._db().execute(sql, parameters, idempotent, timeout))
        _count_commit()
        return cur

    def executemany(self, sql: str, seq_of_parameters: Any, *, timeout: Optional[float] = None) -> Cursor:
        """One statement once per parameter set, streamed to the broker as one
        transaction, exactly once (the bulk path: rows are executed as they
        arrive). A failing row raises (its index, counting from 0, in the
        message) and nothing of the call is applied. ``rowcount`` is the total of
        rows changed."""
        cur = Cursor(_Detached(self))
        changes, last, _rows = self._db().execute_many(sql, seq_of_parameters, timeout)
        cur._fill((None, [], changes, last))
        _count_commit()
        return cur

    def executescript(self, sql_script: str) -> Cursor:
        """Several ``;``-separated statements as one transaction, exactly once."""
        cur = Cursor(_Detached(self))
        changes, last = self._db().execute_script(sql_script)
        cur._fill((None, [], changes, last))
        _count_commit()
        return cur

    def query(self, sql: str, parameters: Any = ()) -> list:
        """All rows of a read on this process's read-only connection."""
        with self.reader() as conn:
            return conn.execute(sql, parameters).fetchall()

    def watch(self, tables: Any = None, since: Optional[str] = None) -> "Watch":
        """What the other instances commit, pushed as it is committed: an iterator
        of :class:`ChangeEvent` for ``tables`` (a name, a list of names, or None
        for all tables), resuming after the cursor ``since`` when given.

        It reconnects by itself when the broker restarts and resumes after the
        last event it returned; an event with ``is_resync`` true means "reload
        what you show" (the broker cannot say exactly what changed).
        """
        if tables is None:
            names: list = []
        elif isinstance(tables, str):
            names = [tables]
        else:
            names = [str(t) for t in tables]
        return Watch(self._db().watch(names, since))

    # ---- admin
    def _admin(self, what: str) -> Any:
        import json

        return json.loads(self._db().admin(what))

    def status(self) -> Dict[str, Any]:
        """The broker's status (pid, socket, clients, exactly-once, who holds the writer…)."""
        return self._admin("status")

    def stats(self) -> Dict[str, Any]:
        """Database and broker figures (size, WAL, row counts, …)."""
        return self._admin("stats")

    def verify(self) -> Dict[str, Any]:
        """``PRAGMA integrity_check`` and ``foreign_key_check`` at the broker."""
        return self._admin("verify")

    def backup(self, label: str = "manual") -> Dict[str, Any]:
        """An online, consistent, verified copy in the database's ``backups/`` folder."""
        return self._admin("backup:" + label)

    def checkpoint(self, mode: str = "passive") -> Dict[str, Any]:
        """A WAL checkpoint now: ``passive``, ``full``, ``restart`` or ``truncate``."""
        return self._admin("checkpoint:" + mode)

    def connections(self) -> Any:
        """The broker's connected clients."""
        return self._admin("connections")


class TableChange:
    """What one committed transaction did to one table."""

    __slots__ = ("table", "inserted", "updated", "deleted", "rowids", "rowids_capped")

    def __init__(self, table: str, d: Dict[str, Any]) -> None:
        self.table = table
        self.inserted: int = d["inserted"]
        self.updated: int = d["updated"]
        self.deleted: int = d["deleted"]
        self.rowids: list = d["rowids"]
        #: True when ``rowids`` is not complete (past the broker's cap, or a WITHOUT ROWID table).
        self.rowids_capped: bool = d["rowids_capped"]

    def __repr__(self) -> str:
        return (
            f"TableChange({self.table!r}, inserted={self.inserted}, updated={self.updated}, "
            f"deleted={self.deleted}, rowids={self.rowids!r}, rowids_capped={self.rowids_capped})"
        )


class ChangeEvent:
    """One committed transaction that touched a watched table, or a resync."""

    __slots__ = ("cursor", "committed_at", "resync_reason", "tables")

    def __init__(self, d: Dict[str, Any]) -> None:
        import datetime

        #: The event's position: pass it as ``since`` to resume after it.
        self.cursor: str = d["cursor"]
        #: When the COMMIT returned (UTC).
        self.committed_at = datetime.datetime.fromtimestamp(
            d["committed_unix_us"] / 1e6, tz=datetime.timezone.utc
        )
        #: Why the watcher must reload (``cursor_too_old``, ``other_epoch``,
        #: ``external_write``, ``restore``, ``fell_behind``), or None.
        self.resync_reason: Optional[str] = d["resync"]
        #: The watched tables the transaction changed, by name.
        self.tables: Dict[str, TableChange] = {k: TableChange(k, v) for k, v in d["tables"].items()}

    @property
    def is_resync(self) -> bool:
        """True when the broker cannot say what changed: reload what you show."""
        return self.resync_reason is not None

    def __repr__(self) -> str:
        if self.is_resync:
            return f"ChangeEvent({self.cursor!r}, resync={self.resync_reason!r})"
        return f"ChangeEvent({self.cursor!r}, tables={list(self.tables.values())!r})"


class Watch:
    """An iterator of :class:`ChangeEvent` (see :meth:`ConnectionFactory.watch`).

    Iterating blocks until the next event; :meth:`next` takes a timeout.
    Ctrl-C (KeyboardInterrupt) interrupts the wait.
    """

    #: How long one native wait lasts, so that signals are seen between waits.
    _SLICE = 0.25

    def __init__(self, native: Any) -> None:
        self._native = native

    def subscribe(self) -> str:
        """Subscribes now (iterating does it by itself); returns the cursor the
        stream starts at. Events committed after this call are delivered."""
        return self._native.subscribe()

    @property
    def cursor(self) -> Optional[str]:
        """The last event's cursor (resume after it with ``since``), if any."""
        return self._native.cursor

    def next(self, timeout: Optional[float] = None) -> Optional[ChangeEvent]:
        """The next event, or None when none came within ``timeout`` seconds
        (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self._SLICE
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            d = self._native.next(wait)
            if d is not None:
                return ChangeEvent(d)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> ChangeEvent:
        event = self.next(None)
        assert event is not None
        return event


class _Detached(Connection):
    """The ``connection`` of a cursor returned by a factory's one-shot call."""

    def _run(self, cur: Cursor, sql: str, params: Any) -> None:
        raise ProgrammingError("a cursor of factory.execute() cannot run statements; use factory.writer()")


def _rebuild_factory(db_path: str, opts: Dict[str, Any]) -> ConnectionFactory:
    return ConnectionFactory(db_path, **opts)


def _default_client_name() -> str:
    import sys

    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{prog or 'python'} (python)"


_factories: Dict[Tuple[Any, ...], ConnectionFactory] = {}
_factories_lock = threading.Lock()


def get_connection_factory(db_path: "os.PathLike[str] | str" = DEFAULT_DB, **options: Any) -> ConnectionFactory:
    """The process's factory for ``db_path`` (one per path and options)."""
    key = (os.path.abspath(os.fspath(db_path)), tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _factories_lock:
        f = _factories.get(key)
        if f is None:
            f = _factories[key] = ConnectionFactory(db_path, **options)
        return f


def open_connection(db_path: "os.PathLike[str] | str" = DEFAULT_DB, **options: Any) -> AutoConnection:
    """A one-off connection (see :class:`AutoConnection`). Prefer the factory's
    ``reader()``/``writer()`` in code that runs more than once."""
    return AutoConnection(get_connection_factory(db_path, **options))


def get_active_connections_count() -> int:
    """Broker connections and read connections this process has open now."""
    return _native.active_connections()


# ----- retries ----------------------------------------------------------------------


def _delay(retry: int, base: float, cap: float) -> float:
    """The wait before retry number ``retry`` (1-based): 0.5, 1, 2, 4, 5, 5… s."""
    return min(base * (2 ** (retry - 1)), cap)


def retry_on_locked(
    max_attempts: int = 3,
    idempotent_only: bool = True,
    *,
    base_delay: float = RETRY_BASE_DELAY,
    max_delay: float = RETRY_MAX_DELAY,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Retries the decorated function when it fails with a ``sqlite3.OperationalError``
    whose message says "locked" (so :class:`DatabaseLockedError` too), up to
    ``max_attempts`` retries after the first try, waiting 0.5 s, 1 s, 2 s, 4 s,
    then 5 s (the cap) between them. Any other exception is raised at once.

    What may be retried: reads always; an UPSERT that sets values (``ON
    CONFLICT(key) DO UPDATE SET qty = excluded.qty``); not a plain INSERT without
    a unique key, nor an update relative to the old value (``qty = qty + 1``,
    also the UPSERT that adds ``qty + excluded.qty``): applied twice, they
    duplicate or double-count. With ``idempotent_only=True`` (the default) the
    decorator enforces what it can see: an attempt that already committed a
    litebroker write before failing is not retried (running it again would
    apply that write twice) — the error is raised with that reason. A write that
    failed "locked" itself applied nothing, so a function whose only write failed
    is retried. Pass ``idempotent_only=False`` for a function you know to be
    idempotent as a whole.

    After the last retry the last error is raised, with ``e.attempts`` set.
    """
    if max_attempts < 0:
        raise ValueError("max_attempts must be >= 0")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            retry = 0
            while True:
                before = getattr(_local, "commits", 0)
                try:
                    return fn(*args, **kwargs)
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e).lower() and "locked" not in str(getattr(e, "detail", "")).lower():
                        raise
                    e.attempts = retry + 1  # type: ignore[attr-defined]
                    committed = getattr(_local, "commits", 0) - before
                    if idempotent_only and committed > 0:
                        log.error(
                            "%s: not retried: this attempt had already committed %d write(s), which a retry "
                            "would apply again (mark the function idempotent_only=False if it is idempotent)",
                            fn.__qualname__,
                            committed,
                        )
                        e.not_retried = "committed writes before the lock"  # type: ignore[attr-defined]
                        raise
                    if retry >= max_attempts:
                        log.error(
                            "%s: database still locked after %d attempt(s); giving up", fn.__qualname__, retry + 1
                        )
                        raise
                    retry += 1
                    delay = _delay(retry, base_delay, max_delay)
                    log.warning(
                        "%s: database locked; retry %d of %d in %.1f s", fn.__qualname__, retry, max_attempts, delay
                    )
                    time.sleep(delay)

        return wrapper

    return decorate
