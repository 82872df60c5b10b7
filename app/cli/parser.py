"""The ``quarry`` command line: every command, its flags, and the global options.

The global options (``--config``, ``--data-dir``, ``--debug``, and ``--url`` / ``--api-key`` for
the commands that call a running server) are accepted before or after the command, at any depth
(``quarry --debug serve`` and ``quarry keys list --data-dir d`` alike). The
parsed ``command`` names the handler to run (:data:`app.cli.commands.HANDLERS`).
"""

from __future__ import annotations

import argparse
from typing import Any, TypeAlias

from app.cli import materialize, rollback
from app.cli.client_commands import add_client_parsers
from app.cli.http_server import DRAIN_TIMEOUT_S
from app.kernel.settings import HTTP_SERVERS

__all__ = ["build_parser"]

_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


class _Parser(argparse.ArgumentParser):
    """A parser whose every subcommand takes the global options too.

    A subcommand's parser is made by its parent's class, so each one adds them; their defaults
    are suppressed there, so an option given before the command is not reset after it. A
    command may declare a global option again (its own ``--url`` help): its own one wins.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        common = self.add_argument_group("global options")
        common.add_argument(
            "--config", default=argparse.SUPPRESS, help="a quarry.toml file (default ./quarry.toml)"
        )
        common.add_argument(
            "--data-dir",
            default=argparse.SUPPRESS,
            help="where embedded data lives (QUARRY_DATA_DIR)",
        )
        common.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback when a command fails",
        )
        common.add_argument(
            "--url",
            default=argparse.SUPPRESS,
            help="a running server for client commands (QUARRY_URL; default: run in-process)",
        )
        common.add_argument(
            "--api-key",
            default=argparse.SUPPRESS,
            help="the API key to present to --url (QUARRY_API_KEY)",
        )


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``quarry`` command."""
    parser = _Parser(prog="quarry", description="Quarry ML platform")
    parser.set_defaults(config=None, data_dir=None, debug=False, url=None, api_key=None)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _worker_parser(sub)
    migrate = sub.add_parser("migrate", help="upgrade every hosted module's database")
    migrate.add_argument("--modules", help="modules to migrate (default: every hosted one)")
    _modules_parser(sub)
    _keys_parser(sub)
    _quickstart_parser(sub)
    _train_parser(sub)
    _rollouts_parser(sub)
    rollback.add_parser(sub)
    materialize.add_parser(sub)
    _events_parser(sub)
    add_client_parsers(sub)
    example = sub.add_parser("example-model", help="write a small ONNX model to try Quarry with")
    example.add_argument("path", help="where to write it, e.g. model.onnx")
    example.add_argument("--features", type=int, default=3, help="width of input x (default 3)")
    return parser


def _serve_parser(sub: _Commands) -> None:
    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--modules", help="modules to host (QUARRY_MODULES), e.g. registry,features")
    serve.add_argument("--host", help="address to bind (QUARRY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (QUARRY_PORT, default 8000)")
    serve.add_argument(
        "--workers",
        help="server processes sharing the port (QUARRY_WORKERS, default 1; auto: one per core)",
    )
    serve.add_argument(
        "--http-server",
        choices=HTTP_SERVERS,
        help="what serves HTTP (QUARRY_HTTP_SERVER, default auto: granian while the workers"
        " leave a core free, else uvicorn)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=int,
        default=DRAIN_TIMEOUT_S,
        help="seconds to finish requests",
    )
    serve.add_argument(
        "--drain-delay",
        type=float,
        default=2.0,
        help="seconds /readyz fails before the listener closes on SIGTERM",
    )


def _worker_parser(sub: _Commands) -> None:
    worker = sub.add_parser("worker", help="run task workers (needs QUARRY_BROKER_URL=redis://)")
    worker.add_argument("--modules", help="modules whose tasks to run (default: all hosted)")
    worker.add_argument("--queues", help="comma-separated queues (default: every declared one)")
    worker.add_argument("--threads", type=int, default=8, help="worker threads")


def _modules_parser(sub: _Commands) -> None:
    modules = sub.add_parser("modules", help="list modules and where they run")
    modules.add_argument(
        "--graph", action="store_true", help="print the module graph as a Mermaid flowchart"
    )


def _keys_parser(sub: _Commands) -> None:
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (shown once)")
    create.add_argument("--scopes", required=True, help="comma-separated: admin,read,predict,...")
    create.add_argument("--name", default="key", help="a label for the key")
    keys_sub.add_parser("list", help="list keys (never the secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")


def _quickstart_parser(sub: _Commands) -> None:
    quick = sub.add_parser(
        "quickstart", help="ingest, train, deploy, drift, retrain and roll out, then serve"
    )
    quick.add_argument("--host", help="address to serve on (default 127.0.0.1)")
    quick.add_argument("--port", type=int, help="port to serve on (default 8000)")
    quick.add_argument("--no-serve", action="store_true", help="exit after the rollout stage")


def _train_parser(sub: _Commands) -> None:
    train = sub.add_parser("train", help="submit a training job and follow it")
    train.add_argument("spec", nargs="?", help="the job spec as JSON (a file, or - for stdin)")
    train.add_argument("--job", help="follow an existing job instead of submitting one")
    train.add_argument("--no-wait", action="store_true", help="answer once the job is queued")


def _rollouts_parser(sub: _Commands) -> None:
    """``quarry rollouts list|show|promote|abort``, in-process or against ``--url``."""
    rollouts = sub.add_parser("rollouts", help="inspect, promote or abort progressive rollouts")
    rollouts_sub = rollouts.add_subparsers(dest="rollouts_command", required=True)
    listed = rollouts_sub.add_parser("list", help="rollouts, newest first")
    listed.add_argument("--deployment", help="only this deployment's rollouts")
    listed.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    rollouts_sub.add_parser("show", help="a rollout and its decisions").add_argument("id")
    for name, text in (
        ("promote", "all traffic to the candidate now"),
        ("abort", "all traffic back to the baseline now"),
    ):
        cmd = rollouts_sub.add_parser(name, help=text)
        cmd.add_argument("id")
        cmd.add_argument("--reason", help="recorded in the rollout's history")


def _events_parser(sub: _Commands) -> None:
    events = sub.add_parser("events", help="inspect and resubmit failed event deliveries")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    for name, text in (("failed", "list failed deliveries"), ("retry", "deliver failed again")):
        cmd = events_sub.add_parser(name, help=text)
        cmd.add_argument("--module", help="the publishing module (default: all)")
        if name == "retry":
            cmd.add_argument("--event", help="only this event id")
            cmd.add_argument("--subscriber", help="only this subscriber")
