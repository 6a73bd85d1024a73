"""Hardening (issue 13): revoked login tokens (logout), and the encrypted reason of "send for review".

Revision ID: 0004_hardening
Revises: 0003_case_embedding
Create Date: 2026-12-05

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_hardening"
down_revision: str | Sequence[str] | None = "0003_case_embedding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"], unique=False)
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("review_reason", sa.Text(), nullable=True))  # a Fernet token (EncryptedText)


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("review_reason")
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
