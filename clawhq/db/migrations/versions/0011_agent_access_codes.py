"""One-time codes that take an agent's owner to the agent's own origin.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_access_codes",
        sa.Column("code_hash", sa.String(length=64), primary_key=True),
        sa.Column(
            "agent_id",
            sa.String(length=32),
            sa.ForeignKey("agents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "user_id",
            sa.String(length=32),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_agent_access_codes_expires_at", "agent_access_codes", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_access_codes_expires_at", table_name="agent_access_codes")
    op.drop_table("agent_access_codes")
