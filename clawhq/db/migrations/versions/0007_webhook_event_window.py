"""Webhook events are kept for a bounded window: an index to prune them by age.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_events_received_at", "webhook_events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_received_at", table_name="webhook_events")
