"""Alias history: every move of an alias, with its reason (what a rollback goes back to).

Revision ID: 0003_registry_alias_history
Revises: 0002_registry_reference_profiles
Create Date: 2026-12-03 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003_registry_alias_history"
down_revision: str | Sequence[str] | None = "0002_registry_reference_profiles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the alias history table (aliases set before it have no history)."""
    op.create_table(
        "registry_alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("previous_version", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_registry_alias_history_alias", "registry_alias_history", ["model", "alias", "id"]
    )


def downgrade() -> None:
    """Drop the alias history table."""
    op.drop_index("ix_registry_alias_history_alias", table_name="registry_alias_history")
    op.drop_table("registry_alias_history")
