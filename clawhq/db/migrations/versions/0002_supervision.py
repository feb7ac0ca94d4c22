"""Supervision: desired state, exit details, restart bookkeeping, start generations.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DESIRED = sa.Enum(
    "RUNNING", "STOPPED", "DELETED", name="desiredstate", native_enum=False, length=16
)


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("desired_state", DESIRED, nullable=False, server_default="STOPPED")
        )
        batch.add_column(
            sa.Column("keep_workspace", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("last_exit_code", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("oom_killed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("restart_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("backoff_step", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("start_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("next_restart_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_healthy_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE agents SET desired_state = 'RUNNING' "
        "WHERE status IN ('RUNNING', 'DEPLOYING', 'UNHEALTHY', 'RESTARTING')"
    )


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        for column in (
            "last_healthy_at",
            "next_restart_at",
            "start_generation",
            "backoff_step",
            "restart_count",
            "oom_killed",
            "last_exit_code",
            "keep_workspace",
            "desired_state",
        ):
            batch.drop_column(column)
