"""Progressive rollouts, and the module's outbox (it publishes ``RolloutChanged``).

Revision ID: 0003_inference_rollouts
Revises: 0002_inference_batch_jobs
Create Date: 2026-11-29 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kernel.events.outbox import create_outbox_tables

# revision identifiers, used by Alembic.
revision: str = "0003_inference_rollouts"
down_revision: str | Sequence[str] | None = "0002_inference_batch_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the rollout table and the outbox tables."""
    op.create_table(
        "inference_rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("deployment", sa.String(128), nullable=False, index=True),
        sa.Column("running", sa.String(128), nullable=True, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("step_started_at", sa.Float, nullable=False),
        sa.Column("next_check_at", sa.Float, nullable=True, index=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    create_outbox_tables(op, "inference")


def downgrade() -> None:
    """Drop the outbox and rollout tables."""
    op.drop_table("inference_event_deliveries")
    op.drop_table("inference_outbox")
    op.drop_table("inference_rollouts")
