"""A consistent copy of a running database, taken by the engine itself, and what such a copy holds.

SQLite: the online backup API (`sqlite3.Connection.backup`) copies every page under one read transaction, so the copy
is the database as of one commit while the backend keeps writing (WAL: readers never block the writer). The copy is
switched to a plain rollback journal, so it is one self-contained file.

PostgreSQL: `pg_dump` (custom format) run on a snapshot exported by a REPEATABLE READ transaction of ours, so the
image references we read in that transaction are exactly the ones in the dump. `pg_dump` must not be older than the
server (Debian: `apt-get install postgresql-client-15` for a version 15 server). A dump is read back without a
server by `pg_restore -f -` (the COPY data as text), which is how a backup is verified.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL

from storage.database import Database, normalize_database_url
from storage.errors import BackupError

_CLIENT_TIMEOUT_S = 6 * 3600
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class SnapshotFacts:
    """What the backup needs to know of a database copy: its schema revision and the images its cases name."""

    schema_revision: str | None
    image_refs: frozenset[str]


# --- SQLite -----------------------------------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path:
    """The file of a SQLite URL (`BackupError` for an in-memory database, which cannot be backed up)."""
    database = normalize_database_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("An in-memory SQLite database cannot be backed up or restored.")
    return Path(database).expanduser()


def snapshot_sqlite(source: Path, target: Path) -> None:
    """Copy the live SQLite database `source` to `target` through the online backup API (one consistent state)."""
    if not source.is_file():
        raise BackupError(f"The SQLite database {source} does not exist.")
    with closing(sqlite3.connect(source, timeout=30)) as live, closing(sqlite3.connect(target)) as copy:
        live.backup(copy)  # pages=-1: all pages in one step, under one read transaction
        copy.execute("PRAGMA journal_mode = DELETE")  # the copy is one file, no -wal beside it


def sqlite_facts(path: Path) -> SnapshotFacts:
    """Schema revision and referenced images of a SQLite copy; `BackupError` if the file is not a sound database."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as copy:
            check = copy.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"{path.name} fails SQLite's integrity check: {check}")
            tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = (
                copy.execute("SELECT version_num FROM alembic_version").fetchone()
                if "alembic_version" in tables
                else None
            )
            refs = copy.execute("SELECT image_sha256 FROM cases").fetchall() if "cases" in tables else []
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path.name} is not a readable SQLite database ({exc}).") from exc
    return SnapshotFacts(revision[0] if revision else None, frozenset(row[0] for row in refs))


def sqlite_is_empty(path: Path) -> bool:
    if not path.exists():
        return True
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as existing:
        return existing.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0


# --- PostgreSQL -------------------------------------------------------------------------------------------------------


def postgres_schema(url: str) -> str:
    """The schema the URL's connections use (its `options=-csearch_path=...`, else public)."""
    options = normalize_database_url(url).query.get("options", "")
    found = re.search(r"search_path\s*=\s*([A-Za-z0-9_]+)", options if isinstance(options, str) else " ".join(options))
    return found.group(1) if found else "public"


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment carrying it (never on a command line)."""
    parsed: URL = normalize_database_url(url)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    dsn = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return dsn, env


def _client(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is not installed: PostgreSQL backups need the PostgreSQL client tools of the server's version "
            "(Debian: apt-get install postgresql-client-15)."
        )
    return path


def _major(version_text: str) -> int:
    found = _VERSION.search(version_text)
    if found is None:
        raise BackupError(f"Cannot read a PostgreSQL version from {version_text!r}.")
    return int(found.group(1))


def check_client_version(database: Database, tool: str) -> str:
    """`tool --version`, after checking it is not older than the server (it would refuse, or lose features)."""
    version = subprocess.run([_client(tool), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    with database.engine.connect() as connection:
        server = str(connection.execute(text("SHOW server_version")).scalar_one())
    if _major(version.split("PostgreSQL)")[-1]) < _major(server):
        raise BackupError(
            f"{tool} is version {version}, older than the PostgreSQL server ({server}): install the client tools of "
            f"the server's version (Debian: apt-get install postgresql-client-{_major(server)})."
        )
    return version


def _run(argv: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=_CLIENT_TIMEOUT_S)
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def dump_postgres(database: Database, target: Path) -> SnapshotFacts:
    """`pg_dump` of the database's schema into `target`, on the snapshot from which we read the image references."""
    dsn, env = _libpq(database.url)
    schema = postgres_schema(database.url)
    pg_dump = _client("pg_dump")
    snapshot_connection = database.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot_connection as connection, connection.begin():
        snapshot = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
        refs = frozenset(row[0] for row in connection.execute(text("SELECT image_sha256 FROM cases")))
        argv = [pg_dump, "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
                f"--schema={schema}", f"--file={target}", f"--dbname={dsn}"]  # fmt: skip
        _run(argv, env, "pg_dump")
    return SnapshotFacts(revision, refs)


def _copy_rows(script: str, table: str) -> Iterator[dict[str, str]]:
    """Rows of `table` in the COPY blocks of a plain SQL script (`pg_restore -f -`), as column -> text."""
    columns: list[str] | None = None
    for line in script.splitlines():
        if columns is None:
            header = re.match(rf"COPY (?:\S+\.)?{table} \((.*)\) FROM stdin;$", line)
            columns = [name.strip().strip('"') for name in header.group(1).split(",")] if header else None
        elif line == "\\.":
            columns = None
        else:
            yield dict(zip(columns, line.split("\t"), strict=False))


def postgres_facts(path: Path) -> SnapshotFacts:
    """Schema revision and referenced images of a `pg_dump` archive, read without a server."""
    argv = [_client("pg_restore"), "--data-only", "--table=alembic_version", "--table=cases", "--file=-", str(path)]
    script = _run(argv, {**os.environ}, f"Reading {path.name} with pg_restore")
    revisions = [row["version_num"] for row in _copy_rows(script, "alembic_version")]
    refs = frozenset(row["image_sha256"] for row in _copy_rows(script, "cases"))
    return SnapshotFacts(revisions[0] if revisions else None, refs)


def postgres_is_empty(database: Database) -> bool:
    schema = postgres_schema(database.url)
    with database.engine.connect() as connection:
        return not inspect(connection).get_table_names(schema=schema)


def restore_postgres(database: Database, archive: Path) -> None:
    """`pg_restore` the archive into the (empty) database in one transaction; an existing schema is kept as it is."""
    dsn, env = _libpq(database.url)
    pg_restore = _client("pg_restore")
    schema = postgres_schema(database.url)
    with database.engine.connect() as connection:
        schema_exists = schema in inspect(connection).get_schema_names()
    listing = _run([pg_restore, "--list", str(archive)], env, "pg_restore --list")
    if schema_exists:  # e.g. public, which every new database has: creating it again would fail the restore
        existing = re.compile(rf" (?:SCHEMA - |COMMENT - SCHEMA ){re.escape(schema)} ")
        listing = "\n".join(line for line in listing.splitlines() if not existing.search(line))
    with tempfile.NamedTemporaryFile("w", suffix=".list", encoding="utf-8") as list_file:
        list_file.write(listing)
        list_file.flush()
        argv = [pg_restore, "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
                f"--use-list={list_file.name}", f"--dbname={dsn}", str(archive)]  # fmt: skip
        _run(argv, env, "pg_restore")
