"""The monitoring module's tables: prediction records, feedback, drift reports, and its outbox.

Revision ID: 0001_monitoring_initial
Revises:
Create Date: 2026-11-29 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kernel.events.outbox import create_outbox_tables

# revision identifiers, used by Alembic.
revision: str = "0001_monitoring_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the monitoring module's tables."""
    op.create_table(
        "monitoring_predictions",
        sa.Column("prediction_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("deployment", sa.String(128), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("outputs", sa.LargeBinary, nullable=True),
        sa.Column("inputs", sa.LargeBinary, nullable=True),
    )
    op.create_index(
        "ix_monitoring_predictions_model", "monitoring_predictions", ["model", "version", "at"]
    )
    op.create_index("ix_monitoring_predictions_at", "monitoring_predictions", ["at"])
    op.create_table(
        "monitoring_feedback",
        sa.Column("prediction_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("label", sa.JSON, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_monitoring_feedback_model", "monitoring_feedback", ["model", "version"])
    op.create_table(
        "monitoring_drift_reports",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index(
        "ix_monitoring_drift_reports_model", "monitoring_drift_reports", ["model", "created_at"]
    )
    create_outbox_tables(op, "monitoring")


def downgrade() -> None:
    """Drop the monitoring module's tables."""
    op.drop_table("monitoring_event_deliveries")
    op.drop_table("monitoring_outbox")
    op.drop_index("ix_monitoring_drift_reports_model", table_name="monitoring_drift_reports")
    op.drop_table("monitoring_drift_reports")
    op.drop_index("ix_monitoring_feedback_model", table_name="monitoring_feedback")
    op.drop_table("monitoring_feedback")
    op.drop_index("ix_monitoring_predictions_at", table_name="monitoring_predictions")
    op.drop_index("ix_monitoring_predictions_model", table_name="monitoring_predictions")
    op.drop_table("monitoring_predictions")
