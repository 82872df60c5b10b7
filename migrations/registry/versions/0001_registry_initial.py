"""The registry's tables: models, versions, aliases, and its event outbox.

Revision ID: 0001_registry_initial
Revises:
Create Date: 2025-01-01 00:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kernel.events.outbox import create_outbox_tables

# revision identifiers, used by Alembic.
revision: str = "0001_registry_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the registry's tables."""
    op.create_table(
        "registry_models",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "registry_versions",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("signature", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("lineage", sa.JSON, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model"], ["registry_models.name"], name="fk_registry_versions_model"
        ),
        sa.UniqueConstraint(
            "model", "idempotency_key", name="uq_registry_versions_idempotency_key"
        ),
        sa.CheckConstraint(
            "status IN ('ready', 'archived')", name="ck_registry_versions_status"
        ),
    )
    op.create_index("ix_registry_versions_sha256", "registry_versions", ["sha256"])
    op.create_table(
        "registry_aliases",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("alias", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(
            ["model", "version"],
            ["registry_versions.model", "registry_versions.version"],
            name="fk_registry_aliases_version",
        ),
    )
    op.create_index("ix_registry_aliases_version", "registry_aliases", ["model", "version"])
    create_outbox_tables(op, "registry")


def downgrade() -> None:
    """Drop the registry's tables."""
    op.drop_table("registry_event_deliveries")
    op.drop_table("registry_outbox")
    op.drop_index("ix_registry_aliases_version", table_name="registry_aliases")
    op.drop_table("registry_aliases")
    op.drop_index("ix_registry_versions_sha256", table_name="registry_versions")
    op.drop_table("registry_versions")
    op.drop_table("registry_models")
