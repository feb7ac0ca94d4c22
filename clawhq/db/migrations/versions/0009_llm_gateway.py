"""The LLM gateway: per-agent LLM tokens, the usage ledger, and the plans' budgets and limits.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: name -> (monthly bundled-key tokens, requests a minute, tokens a minute) per agent.
PLAN_LIMITS = {
    "free": (None, 30, 200_000),
    "pro": (5_000_000, 60, 400_000),
    "team": (50_000_000, 300, 2_000_000),
}


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("monthly_token_budget", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("budget_own_keys", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("llm_requests_per_minute", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("llm_tokens_per_minute", sa.BigInteger(), nullable=True))
    plans = sa.table(
        "plans",
        sa.column("name", sa.String),
        sa.column("monthly_token_budget", sa.BigInteger),
        sa.column("llm_requests_per_minute", sa.Integer),
        sa.column("llm_tokens_per_minute", sa.BigInteger),
    )
    for name, (budget, rpm, tpm) in PLAN_LIMITS.items():
        op.execute(
            plans.update()
            .where(plans.c.name == name)
            .values(
                monthly_token_budget=budget,
                llm_requests_per_minute=rpm,
                llm_tokens_per_minute=tpm,
            )
        )
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("llm_token_hash", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_agents_llm_token_hash", ["llm_token_hash"])
    op.create_table(
        "llm_calls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("plan", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("key_source", sa.String(length=8), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_llm_calls"),
    )
    op.create_index("ix_llm_calls_at", "llm_calls", ["at"])
    op.create_index("ix_llm_calls_user_id_at", "llm_calls", ["user_id", "at"])
    op.create_index("ix_llm_calls_agent_id_at", "llm_calls", ["agent_id", "at"])


def downgrade() -> None:
    op.drop_table("llm_calls")
    with op.batch_alter_table("agents") as batch:
        batch.drop_constraint("uq_agents_llm_token_hash", type_="unique")
        batch.drop_column("llm_token_hash")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("llm_tokens_per_minute")
        batch.drop_column("llm_requests_per_minute")
        batch.drop_column("budget_own_keys")
        batch.drop_column("monthly_token_budget")
