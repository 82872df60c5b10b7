"""Materialization runs and per-view watermarks of views with a source.

Revision ID: 0002_features_materialization
Revises: 0001_features_initial
Create Date: 2026-12-03 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_features_materialization"
down_revision: str | Sequence[str] | None = "0001_features_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the materialization and watermark tables."""
    op.create_table(
        "features_materializations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("view", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_ts", sa.BigInteger, nullable=True),
        sa.Column("end_ts", sa.BigInteger, nullable=True),
        sa.Column("chunk_rows", sa.Integer, nullable=False),
        sa.Column("rows_total", sa.BigInteger, nullable=True),
        sa.Column("rows_done", sa.BigInteger, nullable=False),
        sa.Column("rows_written", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("watermark_ts", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_features_materializations_view", "features_materializations", ["view"])
    op.create_table(
        "features_watermarks",
        sa.Column("view", sa.String(128), primary_key=True),
        sa.Column("watermark_ts", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("features_watermarks")
    op.drop_index("ix_features_materializations_view", "features_materializations")
    op.drop_table("features_materializations")
