"""Apply the Alembic migrations programmatically, safely when several processes start at once.

The whole upgrade runs in one transaction that first takes a database-wide lock: BEGIN IMMEDIATE on SQLite (the
write lock; others wait up to the busy timeout), a transaction-scoped advisory lock on PostgreSQL. Both databases
have transactional DDL, so a failed migration leaves the schema as it was. Whoever comes second finds the schema at
head and does nothing.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from storage.database import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
# Any fixed 64-bit number, shared by every process of the product ("cxr-migr" in ASCII).
_POSTGRES_MIGRATION_LOCK_ID = 0x6378722D6D696772


def acquire_migration_lock(connection: Connection) -> None:
    """Serialise migrations across processes (SQLite already holds the write lock via BEGIN IMMEDIATE)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:lock_id)"), {"lock_id": _POSTGRES_MIGRATION_LOCK_ID})


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the package's migrations (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def import_model_modules(ini: Path = ALEMBIC_INI) -> tuple[str, ...]:
    """Import the model modules the rooms name in alembic.ini (`model_modules`), so that `Base` describes every table
    of the product; the modules imported. Rooms register their tables there, so storage never names them in code."""
    listed = Config(str(ini)).get_main_option("model_modules") if ini.is_file() else None
    names = tuple(name.strip() for name in (listed or "").split(",") if name.strip())
    for name in names:
        importlib.import_module(name)
    return names


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("storage/migrations/versions holds no revision")
    return head


def schema_revision(database: Database) -> str | None:
    """The revision the database is at (None: never migrated). Readiness compares it with `head_revision()`."""
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate_database(database: Database, revision: str = "head") -> str | None:
    """Upgrade `database` to `revision` (idempotent) and return the revision it is at afterwards."""
    with database.write_connection() as connection:
        acquire_migration_lock(connection)
        command.upgrade(alembic_config(connection), revision)
    return schema_revision(database)


def migrate(url: str, revision: str = "head") -> str | None:
    """Upgrade the database at `url` to `revision` (default: head); see `migrate_database`."""
    database = Database(url)
    try:
        return migrate_database(database, revision)
    finally:
        database.dispose()
