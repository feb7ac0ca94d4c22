"""Workspace backups: one row per backup of an agent's workspace, and its latest restore;
plans' backup schedule.

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
        "agent_backups",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("agent_id", sa.String(length=32), nullable=False),
        sa.Column(
            "user_id",
            sa.String(length=32),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_agent_backups_user_id_users"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("store_key", sa.String(length=512), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("plaintext_size", sa.BigInteger(), nullable=True),
        sa.Column("key_id", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restore_status", sa.String(length=16), nullable=True),
        sa.Column("restore_error", sa.Text(), nullable=True),
        sa.Column("restore_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restore_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("restore_safety_id", sa.String(length=32), nullable=True),
        sa.Column("restart_agent", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_agent_backups_agent_id", "agent_backups", ["agent_id"])
    op.create_index("ix_agent_backups_user_id", "agent_backups", ["user_id"])
    op.create_index("ix_agent_backups_created_at", "agent_backups", ["created_at"])
    with op.batch_alter_table("plans") as batch:
        batch.add_column(
            sa.Column("backup_schedule", sa.String(length=16), nullable=False, server_default="off")
        )
        batch.add_column(sa.Column("backup_keep", sa.Integer(), nullable=False, server_default="7"))


def downgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("backup_keep")
        batch.drop_column("backup_schedule")
    op.drop_index("ix_agent_backups_created_at", table_name="agent_backups")
    op.drop_index("ix_agent_backups_user_id", table_name="agent_backups")
    op.drop_index("ix_agent_backups_agent_id", table_name="agent_backups")
    op.drop_table("agent_backups")
