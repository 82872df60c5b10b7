"""The Quarry app for granian (``granian --interface asgi --factory bench._granian_app:make``):
what ``quarry serve`` builds, served by another ASGI server, for ``bench.serving_baselines``.

The app's lifespan starts and stops the platform, then settles the process's memory as ``quarry
serve`` does (``app.cli.heap``); ``quarry serve``'s draining readiness and its workers are
``quarry serve``'s own, so they are not part of this comparison.
"""

from __future__ import annotations

from litestar import Litestar

from app.bootstrap import Platform, configure, create_app
from app.cli import heap
from app.kernel import telemetry
from app.kernel.settings import load_settings

__all__ = ["make"]


def make() -> Litestar:
    """The platform's HTTP app from ``QUARRY_*`` settings, as ``quarry serve`` makes it."""
    settings = configure(load_settings())
    telemetry.configure(log_level=settings.log_level, log_format=settings.log_format)
    app = create_app(Platform(settings), host=settings.host)
    app.on_startup.append(heap.settle)  # after the platform's start, as `quarry serve` does
    return app
