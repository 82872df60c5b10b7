"""``quarry rollback MODEL``: put the previous champion back, with the reason recorded.

The registry moves the alias (default ``champion``) back to the version it pointed at before
its last move; bare-name predictions and deployments whose routes follow ``MODEL@champion``
follow it. Deployments pinned to ``MODEL:N`` keep their version.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from app.kernel.settings import Settings
    from contracts.registry import RegistryService

__all__ = ["add_parser", "rollback"]


def add_parser(sub: Any) -> None:
    """Declare ``quarry rollback MODEL [--alias A] [--reason R] [--url U] [--api-key K]``."""
    cmd = sub.add_parser(
        "rollback", help="move a model's champion back to its previous version, everywhere"
    )
    cmd.add_argument("model", help="the model whose alias goes back")
    cmd.add_argument("--alias", default="champion", help="the alias (default champion)")
    cmd.add_argument("--reason", default="", help="recorded in the alias history")
    cmd.add_argument("--url", help="a running server (default: run the platform in-process)")
    cmd.add_argument("--api-key", help="an API key with the admin scope (with --url)")


def rollback(settings: Settings, args: argparse.Namespace) -> int:
    """Roll the alias back and print the change as JSON (version, previous_version, reason)."""
    from app.bootstrap import Platform, remote_clients
    from app.cli.serving import run
    from contracts.registry import RollbackAlias

    request = RollbackAlias(name=args.model, alias=args.alias, reason=args.reason)

    async def ask(registry: RegistryService) -> dict[str, Any]:
        change = await registry.rollback_alias(request)
        return dict(msgspec.to_builtins(change))

    async def answer() -> dict[str, Any]:
        if args.url:
            async with remote_clients(args.url, args.api_key) as clients:
                return await ask(clients["registry"])
        async with Platform(settings) as platform:
            return await ask(platform.client("registry", caller="cli"))

    print(json.dumps(run(answer()), indent=2, default=str))
    return 0
