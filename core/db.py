"""Engine, transactions and every dialect difference (SQLite vs PostgreSQL) in one place."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import NullPool

from core.logging import one_line

NOTIFY_CHANNEL = "syncbridge_jobs"

# A worker runs its database calls on this many threads, each holding at most one pooled
# connection at a time; a process's pool holds them plus one for its other reads (the
# console's, the command line's), and grows with the concurrency up to a cap.
WORKER_DB_THREADS = 3
MIN_POOL_SIZE = WORKER_DB_THREADS + 1
MAX_POOL_SIZE = 32


def _driver_operational(exc: BaseException) -> bool:
    """A driver's own connection-level error. psycopg is looked up, not imported: a process
    that never opened PostgreSQL (the command line on SQLite) never pays for importing it,
    and cannot have one of its errors."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)


class DatabaseError(RuntimeError):
    """The database is unreachable or the URL is unusable; the message is one line."""


def mask_url(url: str) -> str:
    """The URL with any password replaced, for headers and logs."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


class Database:
    """One engine plus the transaction helpers the engine code uses.

    `write()` on SQLite opens `BEGIN IMMEDIATE`, so a writer takes the file's write lock
    before it reads what it will change: two processes can never both claim one job.
    `read()` opens a deferred transaction that never blocks writers (WAL).
    """

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise DatabaseError(f"malformed database URL: {mask_url(url)}") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(f"unsupported database {self.dialect!r} (use sqlite or postgresql)")
        if self.dialect == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            if self.dialect == "sqlite":
                self.engine = self._sqlite_engine(parsed)
            else:
                self.engine = create_engine(
                    parsed,
                    pool_size=pool_size,
                    max_overflow=pool_size,
                    pool_pre_ping=True,
                    pool_recycle=1800,
                    connect_args={"connect_timeout": 5, "prepare_threshold": 1},
                )
        except (NoSuchModuleError, ArgumentError, ImportError) as exc:
            raise DatabaseError(f"cannot use database URL {mask_url(url)}: {exc}") from None
        self._read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._write_lock = _writer_lock(self) if self.dialect == "sqlite" else nullcontext()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def display_url(self) -> str:
        return mask_url(self.url)

    def _sqlite_engine(self, parsed: Any) -> Engine:
        database = parsed.database
        if database and database != ":memory:":
            folder = Path(database).expanduser().resolve().parent
            if not folder.is_dir():
                raise DatabaseError(f"database folder does not exist: {folder}")
        engine = create_engine(
            parsed,
            poolclass=NullPool if database in (None, "", ":memory:") else None,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from the sqlite3 module so BEGIN is ours to emit.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        # SQLite: writers of this process queue on a lock before BEGIN IMMEDIATE. SQLite's
        # busy handler polls with sleeps of 1 to 100 ms, so a claim and a completion batch
        # contending for the file's one write lock cost milliseconds each; a handoff through
        # a Python lock costs microseconds. Other processes still meet the busy timeout.
        with self._write_lock, wrap_errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with wrap_errors(), self._read_engine.begin() as conn:
            yield conn

    def notify(self, conn: Connection) -> None:
        """Wake idle workers: NOTIFY on PostgreSQL (delivered at commit), in-process always."""
        if self.is_postgres:
            conn.execute(text("SELECT pg_notify(:c, '')"), {"c": NOTIFY_CHANNEL})
        local_wakeup.fire()

    def ping(self) -> None:
        with self.read() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


_writer_locks: dict[str, threading.RLock] = {}
_writer_locks_guard = threading.Lock()


def _writer_lock(db: Database) -> Any:
    """One lock per SQLite file (per engine for in-memory databases) in this process."""
    database = db.engine.url.database
    key = (str(Path(database).expanduser().resolve())
           if database and database != ":memory:" else f"engine:{id(db.engine)}")
    with _writer_locks_guard:
        return _writer_locks.setdefault(key, threading.RLock())


@contextmanager
def wrap_errors() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise DatabaseError(f"database error: {one_line(exc.orig or exc)}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseError(f"database connection lost: {one_line(exc.orig or exc)}") from exc
        raise
    except Exception as exc:
        if not _driver_operational(exc):
            raise
        # Raised by driver SQL run on the raw connection (raw_connection), which SQLAlchemy
        # does not wrap: a lost connection, a locked file.
        raise DatabaseError(f"database error: {one_line(exc)}") from exc


class LocalWakeup:
    """In-process wake-up for workers sharing a process with the enqueuer (SQLite, console)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def fire(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb()


local_wakeup = LocalWakeup()


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


# --- driver SQL ---------------------------------------------------------------------------------
#
# The statements a busy worker repeats (claim, complete, bulk enqueue, attempt rows) are
# written in driver SQL whose text is fixed whatever the batch size, so each is parsed and
# planned once per connection (psycopg prepares it; sqlite3 caches it) and SQLAlchemy
# compiles nothing. These helpers run them on the connection under a SQLAlchemy one.


def raw_connection(conn: Connection) -> Any:
    """The DBAPI connection under a SQLAlchemy connection, inside its open transaction."""
    return conn.connection.driver_connection


@contextmanager
def pipeline(conn: Connection) -> Iterator[None]:
    """psycopg's pipeline mode on the connection, which is dropped if the pipeline breaks:
    a pipeline cut mid-flight (the server terminated the backend, the network went) leaves
    psycopg unable to roll the connection back, and SQLAlchemy's attempt to would raise
    (and log a traceback) on top of the error that matters."""
    try:
        with raw_connection(conn).pipeline():
            yield
    except Exception:
        conn.invalidate()
        raise


def dumps_json(value: Any) -> str:
    # The same text SQLAlchemy's JSON type writes (None is stored as JSON null).
    return json.dumps(value)


def loads_json(value: Any) -> Any:
    # Payloads come back as text (most are JSON null: no parse for those).
    if value is None or value == "null":
        return None
    return json.loads(value) if isinstance(value, str | bytes) else value
