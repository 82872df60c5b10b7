"""The training module's tables: jobs, and its event outbox.

Revision ID: 0001_training_initial
Revises:
Create Date: 2026-11-29 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kernel.events.outbox import create_outbox_tables

# revision identifiers, used by Alembic.
revision: str = "0001_training_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the training module's tables."""
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("verdict", sa.JSON, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_training_jobs_status", "training_jobs", ["status", "heartbeat_at"])
    op.create_index("ix_training_jobs_created", "training_jobs", ["created_at"])
    create_outbox_tables(op, "training")


def downgrade() -> None:
    """Drop the training module's tables."""
    op.drop_table("training_event_deliveries")
    op.drop_table("training_outbox")
    op.drop_index("ix_training_jobs_created", table_name="training_jobs")
    op.drop_index("ix_training_jobs_status", table_name="training_jobs")
    op.drop_table("training_jobs")
