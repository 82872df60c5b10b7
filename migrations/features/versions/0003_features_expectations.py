"""Data expectations of feature views.

Revision ID: 0003_features_expectations
Revises: 0002_features_materialization
Create Date: 2026-12-03 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003_features_expectations"
down_revision: str | Sequence[str] | None = "0002_features_materialization"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the expectations table."""
    op.create_table(
        "features_expectations",
        sa.Column("view", sa.String(128), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("violations", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("features_expectations")
