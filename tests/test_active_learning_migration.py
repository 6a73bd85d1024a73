"""Revision 0007_learning_loop: the tables match the models, the review queue of 0006 moves into queue items with
the right reasons, and a downgrade gives back the 0006 schema with the cases untouched. SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import active_learning  # noqa: F401  (its tables join storage's metadata)
import monitoring.models  # noqa: F401  (so does every room's: the comparison covers the whole schema)
from storage import (
    Base,
    CaseStatus,
    Database,
    NewCase,
    PatientInfo,
    migrate_database,
    schema_revision,
)
from storage.migrate import acquire_migration_lock, alembic_config
from tests.conftest import DATABASES, empty_database
from tests.old_schema import read_old_case, store_old_case

BEFORE = "0006_case_scope"
LOOP_TABLES = {"queue_items", "queue_claims", "annotations", "final_labels"}


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from empty_database(request, tmp_path, "al_migration")


def downgrade(database: Database, revision: str) -> None:
    with database.write_connection() as connection:
        acquire_migration_lock(connection)
        command.downgrade(alembic_config(connection), revision)


def queued_case(
    database: Database,
    *,
    notes: list[object],
    uncertain: bool,
    ood: bool | None,
    status: CaseStatus = CaseStatus.QUEUED_FOR_REVIEW,
) -> str:
    return store_old_case(
        database,
        NewCase(
            image_sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
            image_format="PNG",
            task="pneumonia",
            prediction="PNEUMONIA",
            confidence=0.55,
            probabilities={"NORMAL": 0.45, "PNEUMONIA": 0.55},
            model_version="pneumonia-v1",
            patient=PatientInfo(patient_id="MRN-1", name="Ada Example"),
            quality_warnings=notes,
            uncertain=uncertain,
            ood=ood,
            status=status,
        ),
    )


def test_tables_match_the_models(database: Database) -> None:
    migrate_database(database)
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []  # the migrations create exactly the models


def test_the_review_queue_moves_into_queue_items_and_back(database: Database) -> None:
    migrate_database(database, BEFORE)
    by_hand = queued_case(
        database,
        notes=["low contrast", {"code": "review_requested", "message": "Sent for expert review by dr.house."}],
        uncertain=True,
        ood=None,
    )
    old_style = queued_case(
        database,
        notes=[{"code": "review_requested", "message": "Sent for expert review by dr: apex"}],
        uncertain=False,
        ood=False,
    )
    refused = queued_case(database, notes=[], uncertain=True, ood=True)
    queued_case(database, notes=[], uncertain=True, ood=None, status=CaseStatus.REVIEWED)  # not in the queue: no item

    assert migrate_database(database) != BEFORE
    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT case_id, state, reasons, note FROM queue_items")).all()
    items = {row.case_id: row for row in rows}
    assert set(items) == {by_hand, old_style, refused}
    assert _reasons(items[by_hand].reasons) == [("manual", "dr.house"), ("uncertain", None)]
    assert _reasons(items[old_style].reasons) == [("manual", "dr")]
    assert _reasons(items[refused].reasons) == [("uncertain", None), ("ood", None)]
    assert {row.state for row in rows} == {"open"} and {row.note for row in rows} == {None}

    downgrade(database, BEFORE)
    assert schema_revision(database) == BEFORE
    assert not LOOP_TABLES & set(inspect(database.engine).get_table_names())
    assert read_old_case(database, by_hand)["status"] == CaseStatus.QUEUED_FOR_REVIEW  # they keep their queue of 0006
    migrate_database(database)  # and the upgrade runs again on the same data
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM queue_items")).scalar_one() == 3


def _reasons(value: object) -> list[tuple[str, str | None]]:
    """(code, requested_by) of each reason; JSON comes back parsed on PostgreSQL and as text on SQLite."""
    reasons = value if isinstance(value, list) else json.loads(str(value))
    return [(reason["code"], reason["requested_by"]) for reason in reasons]
