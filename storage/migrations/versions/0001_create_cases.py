"""Create the cases table (patient fields encrypted at rest, keyed patient_id index).

Revision ID: 0001_create_cases
Revises:
Create Date: 2025-11-29

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_create_cases"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=True),
        sa.Column("patient_id_hash", sa.String(length=64), nullable=True),
        sa.Column("patient_name", sa.Text(), nullable=True),
        sa.Column("patient_birth_date", sa.Text(), nullable=True),
        sa.Column("patient_age", sa.Integer(), nullable=True),
        sa.Column("patient_sex", sa.String(length=16), nullable=True),
        sa.Column("clinical_history", sa.Text(), nullable=True),
        sa.Column("study_metadata", sa.Text(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("image_format", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("prediction", sa.String(length=64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("probabilities", JSON_TYPE, nullable=False),
        sa.Column("positive_probability", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("uncertainty", JSON_TYPE, nullable=True),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("ood", sa.Boolean(), nullable=True),
        sa.Column("ood_reason", sa.Text(), nullable=True),
        sa.Column("quality_warnings", JSON_TYPE, nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("signed_by", sa.String(length=64), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    for column in ("created_at", "status", "patient_id_hash", "image_sha256", "task", "prediction", "uncertain"):
        op.create_index(op.f(f"ix_cases_{column}"), "cases", [column], unique=False)


def downgrade() -> None:
    op.drop_table("cases")
