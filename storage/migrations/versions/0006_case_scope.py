"""Keep the validated-scope verdict with each case: `scope` (validated, outside_validated, unchecked) and why.

Revision ID: 0006_case_scope
Revises: 0005_monitoring
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_case_scope"
down_revision: str | Sequence[str] | None = "0005_monitoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("scope", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("scope_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("scope_reason")
        batch.drop_column("scope")
