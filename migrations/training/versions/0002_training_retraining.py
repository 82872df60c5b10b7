"""Retraining policies and retraining sagas.

Revision ID: 0002_training_retraining
Revises: 0001_training_initial
Create Date: 2026-11-29 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_training_retraining"
down_revision: str | Sequence[str] | None = "0001_training_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the policy and saga tables."""
    op.create_table(
        "training_retraining_policies",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("last_scheduled_at", sa.Float, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "training_retrainings",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("trigger", sa.String(256), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("rollout_id", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("log", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_training_retrainings_model", "training_retrainings", ["model", "created_at"]
    )


def downgrade() -> None:
    """Drop the policy and saga tables."""
    op.drop_index("ix_training_retrainings_model", table_name="training_retrainings")
    op.drop_table("training_retrainings")
    op.drop_table("training_retraining_policies")
