"""The notifications module's tables: webhooks, their deliveries and the attempts.

Revision ID: 0001_notifications_initial
Revises:
Create Date: 2026-12-03 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001_notifications_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the notifications module's tables."""
    op.create_table(
        "notifications_webhooks",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("secret", sa.String(256), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "notifications_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("webhook", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("round_attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("claimed_by", sa.String(36), nullable=True),
        sa.Column("claimed_until", sa.Float, nullable=True),
        sa.UniqueConstraint("webhook", "event_id", name="uq_notifications_deliveries_event"),
    )
    op.create_index(
        "ix_notifications_deliveries_due", "notifications_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_notifications_deliveries_list", "notifications_deliveries", ["webhook", "created_at"]
    )
    op.create_table(
        "notifications_attempts",
        sa.Column("delivery_id", sa.String(36), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    """Drop the notifications module's tables."""
    op.drop_table("notifications_attempts")
    op.drop_index("ix_notifications_deliveries_list", table_name="notifications_deliveries")
    op.drop_index("ix_notifications_deliveries_due", table_name="notifications_deliveries")
    op.drop_table("notifications_deliveries")
    op.drop_table("notifications_webhooks")
