"""The ``quarry`` command: ``main`` is its entry point (``app.cli:main``)."""

from app.cli.commands import main

__all__ = ["main"]
