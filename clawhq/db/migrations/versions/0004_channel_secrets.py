"""Channel credentials, encrypted like API keys.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("channel_secrets_ciphertext", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("channel_secrets_key_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("channel_secrets_key_id")
        batch.drop_column("channel_secrets_ciphertext")
