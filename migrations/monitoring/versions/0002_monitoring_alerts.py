"""Alert rules with their state.

Revision ID: 0002_monitoring_alerts
Revises: 0001_monitoring_initial
Create Date: 2026-12-03 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_monitoring_alerts"
down_revision: str | Sequence[str] | None = "0001_monitoring_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``monitoring_alerts``."""
    op.create_table(
        "monitoring_alerts",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("signal", sa.String(32), nullable=False),
        sa.Column("comparison", sa.String(8), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("window_s", sa.Float, nullable=False),
        sa.Column("for_s", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("since", sa.Float, nullable=True),
        sa.Column("evaluated_at", sa.Float, nullable=True),
    )


def downgrade() -> None:
    """Drop ``monitoring_alerts``."""
    op.drop_table("monitoring_alerts")
