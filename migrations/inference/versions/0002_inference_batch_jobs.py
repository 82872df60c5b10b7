"""Batch prediction jobs and their input and result chunks.

Revision ID: 0002_inference_batch_jobs
Revises: 0001_inference_initial
Create Date: 2025-02-01 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_inference_batch_jobs"
down_revision: str | Sequence[str] | None = "0001_inference_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the batch job tables."""
    op.create_table(
        "inference_batch_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("rows_done", sa.Integer, nullable=False),
        sa.Column("chunk_rows", sa.Integer, nullable=False),
        sa.Column("coerce", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "inference_batch_chunks",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("offset", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    """Drop the batch job tables."""
    op.drop_table("inference_batch_chunks")
    op.drop_table("inference_batch_jobs")
