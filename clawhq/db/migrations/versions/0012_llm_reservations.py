"""LLM budget reservations: the tokens each model call in flight may still use; and each
user's monthly totals of the ledger, which budgets are read from (filled from the ledger here).

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
        "llm_months",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("key_source", sa.String(length=8), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "month", "key_source", name="pk_llm_months"),
    )
    calls = sa.table(
        "llm_calls",
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("user_id", sa.String),
        sa.column("key_source", sa.String),
        sa.column("total_tokens", sa.BigInteger),
    )
    months = sa.table(
        "llm_months",
        sa.column("user_id", sa.String),
        sa.column("month", sa.String),
        sa.column("key_source", sa.String),
        sa.column("tokens", sa.BigInteger),
    )
    if op.get_bind().dialect.name == "postgresql":
        month = sa.func.to_char(sa.func.timezone("UTC", calls.c.at), "YYYY-MM")
    else:  # stored as UTC text
        month = sa.func.strftime("%Y-%m", calls.c.at)
    totals = sa.select(
        calls.c.user_id, month, calls.c.key_source, sa.func.sum(calls.c.total_tokens)
    ).group_by(calls.c.user_id, month, calls.c.key_source)
    op.execute(months.insert().from_select(["user_id", "month", "key_source", "tokens"], totals))
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
    op.drop_table("llm_months")
