"""LLM budget reservations: the tokens each model call in flight may still use; and each
user's monthly totals of the ledger, which budgets are read from (filled from the ledger here,
kept in step with it by a trigger on every insert).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


#: The month of the new row's ``at`` (UTC), as ``YYYY-MM`` (clawhq.llm.ledger.month_key).
PG_MONTH = "to_char(timezone('UTC', NEW.at), 'YYYY-MM')"
SQLITE_MONTH = "strftime('%Y-%m', NEW.at)"  # stored as UTC text
_ADD = (
    "INSERT INTO llm_months (user_id, month, key_source, tokens) "
    "VALUES (NEW.user_id, {month}, NEW.key_source, NEW.total_tokens) "
    "ON CONFLICT (user_id, month, key_source) "
    "DO UPDATE SET tokens = llm_months.tokens + excluded.tokens"
)


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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION clawhq_llm_months() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"{_ADD.format(month=PG_MONTH)}; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER llm_calls_months AFTER INSERT ON llm_calls "
            "FOR EACH ROW EXECUTE FUNCTION clawhq_llm_months()"
        )
    else:
        op.execute(
            "CREATE TRIGGER llm_calls_months AFTER INSERT ON llm_calls FOR EACH ROW BEGIN "
            f"{_ADD.format(month=SQLITE_MONTH)}; END"
        )
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
    op.execute("DROP TRIGGER llm_calls_months" + (" ON llm_calls" if _postgres() else ""))
    if _postgres():
        op.execute("DROP FUNCTION clawhq_llm_months()")
    op.drop_table("llm_months")


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")
