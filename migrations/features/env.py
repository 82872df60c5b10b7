"""The features module's alembic environment, run by the kernel on the connection it hands over."""

from app.kernel.db import alembic_env

alembic_env()
