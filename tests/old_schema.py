"""Cases in a database held at an older revision, for migration tests.

The ORM's `Case` maps today's columns, so `CaseRepository` fails on a schema that lacks a newer one (its INSERT
and SELECT name every column). These helpers write and read only the columns the database has, through the same
column types (PHI still encrypted), so a test can store cases before an upgrade and check them after it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, inspect, select

from storage import Case, Database, NewCase, new_case_id
from storage.cases import _new_row


def case_columns(database: Database) -> set[str]:
    return {column["name"] for column in inspect(database.engine).get_columns("cases")}


def store_old_case(database: Database, new: NewCase) -> str:
    """Store `new` with the columns the database's revision has; returns the case id."""
    row = _new_row(new, new_case_id())
    existing = case_columns(database)
    values = {c.name: getattr(row, c.key) for c in Case.__table__.columns if c.name in existing}
    values = {name: value for name, value in values.items() if value is not None}  # column defaults fill the rest
    with database.transaction() as session:
        session.execute(insert(Case.__table__).values(values))
    return row.id


def read_old_case(database: Database, case_id: str) -> dict[str, Any]:
    """The case's columns the database has, decoded by their column types."""
    columns = [c for c in Case.__table__.columns if c.name in case_columns(database)]
    with database.session() as session:
        return dict(session.execute(select(*columns).where(Case.id == case_id)).one()._mapping)
