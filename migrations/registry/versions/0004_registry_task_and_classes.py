"""A version's task and class labels (versions registered before have neither).

Revision ID: 0004_registry_task_and_classes
Revises: 0003_registry_alias_history
Create Date: 2026-12-03 16:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004_registry_task_and_classes"
down_revision: str | Sequence[str] | None = "0003_registry_alias_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable ``task`` and ``classes`` columns to the versions."""
    with op.batch_alter_table("registry_versions") as batch:
        batch.add_column(sa.Column("task", sa.String(16), nullable=True))
        batch.add_column(sa.Column("classes", sa.JSON, nullable=True))


def downgrade() -> None:
    """Drop the ``task`` and ``classes`` columns."""
    with op.batch_alter_table("registry_versions") as batch:
        batch.drop_column("classes")
        batch.drop_column("task")
