"""Keep the nodule/mass finding with each case (issue 23): one JSON document, NULL for the cases analysed while no
nodule model was served (every case stored before this revision).

Revision ID: 0009_case_nodule
Revises: 0008_retraining_jobs
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_case_nodule"
down_revision: str | Sequence[str] | None = "0008_retraining_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


# Plain ALTER TABLE, not batch mode: on SQLite a batch rebuilds `cases` (copy, drop, rename), and dropping it fails
# while the learning loop's tables (0007) hold foreign keys to it. SQLite >= 3.35 adds and drops columns in place.


def upgrade() -> None:
    op.add_column("cases", sa.Column("nodule", JSON_TYPE, nullable=True))


def downgrade() -> None:
    op.drop_column("cases", "nodule")
