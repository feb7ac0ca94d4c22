"""LLM budget reservations: the tokens each model call in flight may still use.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_reservations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("key_source", sa.String(length=8), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_llm_reservations"),
    )
    op.create_index(
        "ix_llm_reservations_user_id_expires_at", "llm_reservations", ["user_id", "expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_llm_reservations_user_id_expires_at", table_name="llm_reservations")
    op.drop_table("llm_reservations")
