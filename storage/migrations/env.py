"""Alembic environment of the workstation database.

Programmatic runs (`storage.migrate`) hand in a connection that already holds the migration lock inside one
transaction. Command-line runs (`alembic -c alembic.ini ...` from the repository root) open the database from
`sqlalchemy.url` in the ini file, or from settings (DATABASE_URL) when that is empty, and take the same lock.
"""

from __future__ import annotations

import importlib
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from settings import get_settings
from storage.database import Database
from storage.migrate import acquire_migration_lock
from storage.models import Base

config = context.config
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)  # command line only: never touch app logging

# Rooms that add tables list their model modules here (alembic.ini: model_modules), for autogenerate.
for module_name in (config.get_main_option("model_modules") or "").split(","):
    if module_name.strip():
        importlib.import_module(module_name.strip())
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy-and-move
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    database = Database(config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url)
    try:
        with database.write_connection() as own_connection:
            acquire_migration_lock(own_connection)
            _configure_and_run(own_connection)
    finally:
        database.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
