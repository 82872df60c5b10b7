"""The features module's tables: views, services, transform states, offline and online rows,
and its event outbox.

Revision ID: 0001_features_initial
Revises:
Create Date: 2025-01-01 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kernel.events.outbox import create_outbox_tables

# revision identifiers, used by Alembic.
revision: str = "0001_features_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the features module's tables."""
    for name in ("features_views", "features_services"):
        op.create_table(
            name,
            sa.Column("name", sa.String(128), primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("spec", sa.JSON, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    op.create_table(
        "features_transform_states",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("service", sa.String(128), nullable=False),
        sa.Column("service_version", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "features_rows",
        sa.Column("view", sa.String(128), primary_key=True),
        sa.Column("entity_key", sa.Text, primary_key=True),
        sa.Column("event_ts", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "features_online",
        sa.Column("view", sa.String(128), primary_key=True),
        sa.Column("entity_key", sa.Text, primary_key=True),
        sa.Column("event_ts", sa.BigInteger, nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
    )
    create_outbox_tables(op, "features")


def downgrade() -> None:
    """Drop the features module's tables."""
    for name in (
        "features_event_deliveries",
        "features_outbox",
        "features_online",
        "features_rows",
        "features_transform_states",
        "features_services",
        "features_views",
    ):
        op.drop_table(name)
