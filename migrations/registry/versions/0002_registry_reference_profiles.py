"""Reference profiles stored with registry versions.

Revision ID: 0002_registry_reference_profiles
Revises: 0001_registry_initial
Create Date: 2025-03-01 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_registry_reference_profiles"
down_revision: str | Sequence[str] | None = "0001_registry_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the reference profile table; a profile goes with its version."""
    op.create_table(
        "registry_reference_profiles",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("profile", sa.LargeBinary, nullable=False),
        sa.ForeignKeyConstraint(
            ["model", "version"],
            ["registry_versions.model", "registry_versions.version"],
            name="fk_registry_reference_profiles_version",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    """Drop the reference profile table."""
    op.drop_table("registry_reference_profiles")
