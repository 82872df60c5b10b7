"""Alembic environments, one folder per module (``migrations/<module>/``), shipped in the wheel.

Each module's :class:`app.kernel.db.Database` runs its own environment with its own version table
(``alembic_version_<module>``); no migration touches another module's tables.
"""
