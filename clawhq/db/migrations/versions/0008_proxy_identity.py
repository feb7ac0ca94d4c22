"""The secret ClawHQ's proxy proves itself with to an agent's gateway, sealed like API keys.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("proxy_identity_ciphertext", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("proxy_identity_key_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("proxy_identity_key_id")
        batch.drop_column("proxy_identity_ciphertext")
