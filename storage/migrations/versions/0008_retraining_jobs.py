"""Retraining jobs (issue 14): state, progress and outcome of each retraining, shared by every backend process.

`active_slot` is 'active' while a job is queued or running and NULL once it is final; its UNIQUE constraint lets the
database refuse a second active job from any process (both SQLite and PostgreSQL allow many NULLs).

Revision ID: 0008_retraining_jobs
Revises: 0007_learning_loop
Create Date: 2026-12-05

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_retraining_jobs"
down_revision: str | Sequence[str] | None = "0007_learning_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "retraining_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("started_at", WHEN, nullable=True),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.Column("active_slot", sa.String(length=8), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("heartbeat_at", WHEN, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress", JSON_TYPE, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("champion_version", sa.String(length=128), nullable=True),
        sa.Column("challenger_version", sa.String(length=128), nullable=True),
        sa.Column("metrics", JSON_TYPE, nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retraining_jobs")),
        sa.UniqueConstraint("active_slot", name=op.f("uq_retraining_jobs_active_slot")),
    )
    op.create_index(op.f("ix_retraining_jobs_state"), "retraining_jobs", ["state"])
    op.create_index(op.f("ix_retraining_jobs_created_at"), "retraining_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_table("retraining_jobs")  # drops its indexes with it
