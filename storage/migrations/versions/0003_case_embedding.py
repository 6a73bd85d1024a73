"""Store the model embedding with each case, so similar cases and reports need no second forward pass.

Revision ID: 0003_case_embedding
Revises: 0002_create_users_and_api_keys
Create Date: 2026-12-04

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_case_embedding"
down_revision: str | Sequence[str] | None = "0002_create_users_and_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("embedding")
