"""The controller: generations, start deadlines, image pins, applied config, rollouts.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("image", sa.String(255), nullable=True))
    with op.batch_alter_table("agents") as batch:
        for name in ("generation", "handled_generation", "recreate_generation"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("start_deadline_at", UTC_TIME, nullable=True))
        batch.add_column(sa.Column("image", sa.String(255), nullable=True))
        batch.add_column(sa.Column("applied_config", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rollout_id", sa.String(32), nullable=True))
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("image", sa.String(255), nullable=True),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("max_unavailable", sa.Integer(), nullable=False),
        sa.Column("max_failures", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
    )
    op.create_index("ix_rollouts_state", "rollouts", ["state"])
    op.create_table(
        "rollout_agents",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("previous_image", sa.String(255), nullable=True),
        sa.Column("previous_pin", sa.String(255), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", UTC_TIME, nullable=True),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name="fk_rollout_agents_rollout_id_rollouts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "agent_id", name="pk_rollout_agents"),
    )
    op.create_table(
        "image_versions",
        sa.Column("tag", sa.String(255), nullable=False),
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("built_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("tag", name="pk_image_versions"),
    )


def downgrade() -> None:
    op.drop_table("image_versions")
    op.drop_table("rollout_agents")
    op.drop_index("ix_rollouts_state", "rollouts")
    op.drop_table("rollouts")
    with op.batch_alter_table("agents") as batch:
        for name in (
            "rollout_id",
            "applied_config",
            "image",
            "start_deadline_at",
            "recreate_generation",
            "handled_generation",
            "generation",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("image")
