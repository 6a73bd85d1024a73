"""Engine and sessions for one database URL: SQLite (default, one file) or PostgreSQL (psycopg 3).

SQLite is configured for a workstation that must not lose acknowledged writes and may be opened by several
processes: WAL journal (readers never block the writer), synchronous=FULL (a commit is on disk before it returns,
so it survives a process kill and a power cut), foreign keys on, and a busy timeout instead of instant
"database is locked" errors. SQLAlchemy emits BEGIN itself (the sqlite3 module's legacy mode would not), and write
transactions start with BEGIN IMMEDIATE so they queue on the write lock instead of failing half-way.

Switching a fresh file to WAL is the one step the busy timeout does not cover: SQLite takes a read lock, then
upgrades it to write the file header, and an upgrade that finds another connection doing the same fails at once
with "database is locked" (no busy handler runs, to avoid a deadlock). Several processes starting on one new
database hit that, so the switch is skipped when the file is already in WAL mode (the mode is stored in the file)
and otherwise retried with a short backoff for up to the busy timeout.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageUnavailableError

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
_BEGIN_IMMEDIATE = "cxr_sqlite_begin_immediate"


def normalize_database_url(url: str) -> URL:
    """Parse a database URL; plain postgres:// or postgresql:// URLs get the installed psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageUnavailableError("DATABASE_URL is not a valid database URL.") from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StorageUnavailableError(
            f"Database backend {parsed.get_backend_name()!r} is not supported (use SQLite or PostgreSQL)."
        )
    return parsed


def _switch_to_wal(cursor: sqlite3.Cursor) -> str:
    """Put the database in WAL mode and return the journal mode it is in (see the module docstring for the retry)."""
    mode = str(cursor.execute("PRAGMA journal_mode").fetchone()[0])
    if mode.lower() == "wal":
        return mode
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN (see module docstring)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            mode = _switch_to_wal(cursor)
            if str(mode).lower() != "wal":  # e.g. an in-memory database; durability rules still hold
                logger.warning("SQLite journal_mode is %s, not WAL.", mode)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_BEGIN_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_database_engine(url: str) -> Engine:
    """An engine for `url` with the settings above; creates the SQLite file's folder when needed."""
    parsed = normalize_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


class Database:
    """One database: its engine and session factories.

    `session()` is for reads; `transaction()` for writes (commits on success, rolls back on error, and on SQLite
    takes the write lock up front). Objects stay usable after the block ends (expire_on_commit=False).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_database_engine(url)
        self._read_sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        write_engine = self.engine.execution_options(**{_BEGIN_IMMEDIATE: True}) if self.is_sqlite else self.engine
        self._write_sessions = sessionmaker(bind=write_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._read_sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._write_sessions() as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection inside one write transaction (used by migrations and bulk maintenance)."""
        engine = self.engine.execution_options(**{_BEGIN_IMMEDIATE: True}) if self.is_sqlite else self.engine
        with engine.begin() as connection:
            yield connection

    def ping(self) -> None:
        """Raise `StorageUnavailableError` unless the database answers a trivial query (for readiness checks)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise StorageUnavailableError("The database is not reachable.") from exc

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:  # the URL may carry a password
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"
