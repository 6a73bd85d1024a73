"""Expert reviews of a case's nodule marks (issue 23): a clinician's verdict on each of the model's marks, the boxes
they add and their finding, kept as written (never updated) and exported as expert labels of the nodule task.

Revision ID: 0010_nodule_reviews
Revises: 0009_case_nodule
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_nodule_reviews"
down_revision: str | Sequence[str] | None = "0009_case_nodule"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "nodule_reviews",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("case_id", sa.String(length=36), nullable=False),
        sa.Column("reviewer_id", sa.String(length=64), nullable=False),
        sa.Column("reviewer_role", sa.String(length=16), nullable=False),
        sa.Column("finding", sa.String(length=16), nullable=False),
        sa.Column("marks", JSON_TYPE, nullable=False),
        sa.Column("image_width", sa.Float(), nullable=False),
        sa.Column("image_height", sa.Float(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("model_label", sa.String(length=64), nullable=False),
        sa.Column("model_probability", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("disagreement", JSON_TYPE, nullable=False),
        sa.Column("queued", sa.Boolean(), nullable=False),
        sa.Column("split", sa.String(length=8), nullable=False),
        sa.Column("patient_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_nodule_reviews_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodule_reviews")),
    )
    for column in ("case_id", "reviewer_id", "patient_key", "created_at"):
        op.create_index(op.f(f"ix_nodule_reviews_{column}"), "nodule_reviews", [column])


def downgrade() -> None:
    op.drop_table("nodule_reviews")  # drops its indexes with it
