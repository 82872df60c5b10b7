"""Alert rules over a deployment or a feature view (``target``) and one input column
(``feature``); prediction records indexed by deployment.

Revision ID: 0003_monitoring_alert_targets
Revises: 0002_monitoring_alerts
Create Date: 2026-12-03 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003_monitoring_alert_targets"
down_revision: str | Sequence[str] | None = "0002_monitoring_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns (existing rules watch a model) and the index."""
    with op.batch_alter_table("monitoring_alerts") as batch:
        batch.add_column(sa.Column("target", sa.String(16), nullable=False, server_default="model"))
        batch.add_column(sa.Column("feature", sa.String(128), nullable=True))
    op.create_index(
        "ix_monitoring_predictions_deployment", "monitoring_predictions", ["deployment", "at"]
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_monitoring_predictions_deployment", table_name="monitoring_predictions")
    with op.batch_alter_table("monitoring_alerts") as batch:
        batch.drop_column("feature")
        batch.drop_column("target")
