"""Per-epoch metrics of a job's current attempt.

Revision ID: 0003_training_epoch_history
Revises: 0002_training_retraining
Create Date: 2026-12-03 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003_training_epoch_history"
down_revision: str | Sequence[str] | None = "0002_training_retraining"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the history column (jobs stored before it have none)."""
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("history", sa.JSON, nullable=True))


def downgrade() -> None:
    """Drop the history column."""
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("history")
