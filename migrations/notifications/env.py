"""The notifications alembic environment: the kernel runs it on the connection it hands over."""

from app.kernel.db import alembic_env

alembic_env()
