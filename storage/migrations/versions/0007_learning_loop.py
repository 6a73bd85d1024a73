"""The learning loop (issue 14): queue items, claims, expert reads and final labels; the existing review queue
(cases whose status is `queued_for_review`) moves into `queue_items`.

A case sent by hand carries a `review_requested` note ("Sent for expert review by <username>." or, in older rows,
"... by <username>: <reason>"): it becomes a `manual` reason requested by that username. The free-text reason stays
where it is (`cases.review_reason`, encrypted), so this migration needs no key. Uncertain and out-of-distribution
cases get `uncertain` / `ood` reasons (all that apply, in that order); a queued case with no flag at all was
queued for being uncertain (api/analysis.py), so it gets `uncertain`.

Revision ID: 0007_learning_loop
Revises: 0006_case_scope
Create Date: 2026-12-05

"""

import re
import uuid
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_learning_loop"
down_revision: str | Sequence[str] | None = "0006_case_scope"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)
CASE_ID = sa.String(length=36)
REVIEW_NOTE_CODE = "review_requested"
_REQUESTED_BY = re.compile(r"\bby (?P<who>.+?)(?:\.$|:)")


def _id_column(name: str = "id") -> sa.Column[Any]:
    return sa.Column(name, CASE_ID, nullable=False)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"))


def _create_tables() -> None:
    op.create_table(
        "queue_items",
        _id_column(),
        sa.Column("case_id", CASE_ID, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reasons", JSON_TYPE, nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        _fk("queue_items", "case_id", "cases"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_items")),
        sa.UniqueConstraint("case_id", name=op.f("uq_queue_items_case_id")),
    )
    op.create_index(op.f("ix_queue_items_state"), "queue_items", ["state"])
    op.create_index(op.f("ix_queue_items_created_at"), "queue_items", ["created_at"])
    op.create_table(
        "queue_claims",
        _id_column(),
        sa.Column("item_id", CASE_ID, nullable=False),
        sa.Column("case_id", CASE_ID, nullable=False),
        sa.Column("annotator_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claimed_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("ended_at", WHEN, nullable=True),
        _fk("queue_claims", "item_id", "queue_items"),
        _fk("queue_claims", "case_id", "cases"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_claims")),
    )
    op.create_index(op.f("ix_queue_claims_item_id"), "queue_claims", ["item_id"])
    op.create_index(op.f("ix_queue_claims_annotator_id"), "queue_claims", ["annotator_id"])
    active = sa.text("state = 'active'")
    op.create_index(
        "ix_queue_claims_one_active_per_case",
        "queue_claims",
        ["case_id"],
        unique=True,
        sqlite_where=active,
        postgresql_where=active,
    )
    _create_annotations()
    _create_final_labels()


def _create_annotations() -> None:
    op.create_table(
        "annotations",
        _id_column(),
        sa.Column("case_id", CASE_ID, nullable=False),
        sa.Column("item_id", CASE_ID, nullable=False),
        sa.Column("annotator_id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("boxes", JSON_TYPE, nullable=False),
        sa.Column("claim_id", CASE_ID, nullable=True),
        sa.Column("claimed_at", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("supersedes_id", CASE_ID, nullable=True),
        _fk("annotations", "case_id", "cases"),
        _fk("annotations", "item_id", "queue_items"),
        _fk("annotations", "claim_id", "queue_claims"),
        _fk("annotations", "supersedes_id", "annotations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotations")),
        sa.UniqueConstraint("supersedes_id", name=op.f("uq_annotations_supersedes_id")),
    )
    op.create_index(op.f("ix_annotations_case_id"), "annotations", ["case_id"])
    op.create_index(op.f("ix_annotations_annotator_id"), "annotations", ["annotator_id"])
    op.create_index(op.f("ix_annotations_created_at"), "annotations", ["created_at"])
    current = sa.text("supersedes_id IS NULL")
    op.create_index(
        "ix_annotations_one_current_read",
        "annotations",
        ["case_id", "annotator_id"],
        unique=True,
        sqlite_where=current,
        postgresql_where=current,
    )


def _create_final_labels() -> None:
    op.create_table(
        "final_labels",
        sa.Column("case_id", CASE_ID, nullable=False),
        sa.Column("item_id", CASE_ID, nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("split", sa.String(length=8), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("annotators", JSON_TYPE, nullable=False),
        sa.Column("adjudicator_id", sa.String(length=64), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("prediction", sa.String(length=64), nullable=False),
        sa.Column("finalized_at", WHEN, nullable=False),
        _fk("final_labels", "case_id", "cases"),
        _fk("final_labels", "item_id", "queue_items"),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_final_labels")),
    )
    for column in ("split", "patient_key", "model_version", "finalized_at"):
        op.create_index(op.f(f"ix_final_labels_{column}"), "final_labels", [column])


def migrated_item(row: Any) -> dict[str, Any]:
    """The queue item of one queued case: each reason it was queued for, with who asked (for a request by hand)."""
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)  # SQLite: naive UTC
    at = created.isoformat()
    reasons: list[dict[str, Any]] = []
    for note in row.quality_warnings or []:
        if isinstance(note, dict) and note.get("code") == REVIEW_NOTE_CODE and not reasons:
            match = _REQUESTED_BY.search(str(note.get("message", "")))
            reasons.append({"code": "manual", "requested_by": match.group("who")[:64] if match else None, "at": at})
    for code, flag in (("uncertain", row.uncertain), ("ood", row.ood)):
        if flag:
            reasons.append({"code": code, "requested_by": None, "at": at})
    return {
        "id": str(uuid.uuid4()),
        "case_id": row.id,
        "state": "open",
        "reasons": reasons or [{"code": "uncertain", "requested_by": None, "at": at}],
        "note": None,
        "created_at": row.created_at,
        "updated_at": row.created_at,
    }


def upgrade() -> None:
    _create_tables()
    cases = sa.table(
        "cases",
        sa.column("id", CASE_ID),
        sa.column("status", sa.String()),
        sa.column("created_at", WHEN),
        sa.column("quality_warnings", JSON_TYPE),
        sa.column("uncertain", sa.Boolean()),
        sa.column("ood", sa.Boolean()),
    )
    queued = op.get_bind().execute(sa.select(cases).where(cases.c.status == "queued_for_review")).all()
    items = sa.table(
        "queue_items",
        sa.column("id", CASE_ID),
        sa.column("case_id", CASE_ID),
        sa.column("state", sa.String()),
        sa.column("reasons", JSON_TYPE),
        sa.column("note", sa.Text()),
        sa.column("created_at", WHEN),
        sa.column("updated_at", WHEN),
    )
    if queued:
        op.bulk_insert(items, [migrated_item(row) for row in queued])


def downgrade() -> None:
    # The cases keep their status and notes, so the queue of revision 0006 is what it was.
    for table in ("final_labels", "annotations", "queue_claims", "queue_items"):
        op.drop_table(table)  # drops its indexes with it
