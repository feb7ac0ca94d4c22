"""Plans get a workspace disk size and an egress policy.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("agent_disk", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("egress_policy", sa.String(length=16), nullable=False, server_default="open")
        )


def downgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("egress_policy")
        batch.drop_column("agent_disk")
