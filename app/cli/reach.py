"""Where client commands send their calls: a running server, or a platform in this process.

``--url`` / ``QUARRY_URL`` names a running server, reached over RPC with ``--api-key`` /
``QUARRY_API_KEY`` (an API key whose scopes cover the call); without a URL the command runs the
platform in this process on the configured data directory, logging warnings only unless
``QUARRY_LOG_LEVEL`` asks for more.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app import Quarry, connect
from app.bootstrap import Platform
from app.kernel.settings import ConfigError, Settings
from contracts.common import PermissionDenied, Unauthenticated

__all__ = ["KEY_VARIABLE", "URL_VARIABLE", "quiet", "reach", "resolve_target"]

URL_VARIABLE = "QUARRY_URL"
"""A running server that every client command talks to (``--url`` wins)."""
KEY_VARIABLE = "QUARRY_API_KEY"
"""The API key client commands present to that server (``--api-key`` wins)."""


def resolve_target(args: argparse.Namespace) -> None:
    """Fill ``args.url`` and ``args.api_key`` from the environment where no flag gave them."""
    args.url = getattr(args, "url", None) or os.environ.get(URL_VARIABLE) or None
    args.api_key = getattr(args, "api_key", None) or os.environ.get(KEY_VARIABLE) or None


def quiet(settings: Settings) -> Settings:
    """``settings`` logging warnings only, unless ``QUARRY_LOG_LEVEL`` chose a level."""
    if "QUARRY_LOG_LEVEL" in os.environ:
        return settings
    return settings.replace(log_level="WARNING")


@asynccontextmanager
async def reach(settings: Settings, args: argparse.Namespace, module: str) -> AsyncIterator[Any]:
    """Module ``module``'s contract: on the server at ``args.url``, else in this process."""
    if not args.url:
        async with Platform(quiet(settings)) as platform:
            yield platform.client(module, caller="cli")
        return
    try:
        async with connect(args.url, api_key=args.api_key) as q:
            yield _module(q, module, args.url)
    except (Unauthenticated, PermissionDenied) as exc:
        if args.api_key:
            raise
        raise ConfigError(
            f"{args.url} needs an API key ({exc.message}): set {KEY_VARIABLE} or --api-key;"
            " create one where the server keeps its data with"
            " `quarry keys create --scopes admin,read,predict,train --data-dir DIR`"
        ) from None


def _module(q: Quarry, module: str, url: str) -> Any:
    if module not in q.modules:
        raise ConfigError(f"the server at {url} does not reach module {module}")
    return getattr(q, module)
