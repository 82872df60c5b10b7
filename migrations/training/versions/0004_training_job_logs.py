"""A job's log lines.

Revision ID: 0004_training_job_logs
Revises: 0003_training_epoch_history
Create Date: 2026-12-03 21:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004_training_job_logs"
down_revision: str | Sequence[str] | None = "0003_training_epoch_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the log lines table (jobs stored before it have no lines)."""
    op.create_table(
        "training_job_logs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )


def downgrade() -> None:
    """Drop the log lines table."""
    op.drop_table("training_job_logs")
