"""The ``quarry`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from app.bootstrap import AVAILABLE_MODULES, Platform, configure, create_app
from app.kernel.auth import KeyStore
from app.kernel.db import Database
from app.kernel.events import list_failed, list_failed_inbox, retry_failed, retry_failed_inbox
from app.kernel.settings import ConfigError, Settings, load_settings
from contracts.common import QuarryError

__all__ = ["main"]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- serve / migrate / modules ---------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT: then readiness fails for ``--drain-delay`` seconds (load
    balancers stop sending), the listener closes, in-flight requests get ``--drain-timeout``
    seconds to finish, the modules stop (task workers finish their tasks) and the process exits."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if platform.draining or args.drain_delay <= 0:
                super().handle_exit(sig, frame)  # a second signal stops at once
                return
            platform.draining = True
            print(f"quarry draining for {args.drain_delay} s", file=sys.stderr)
            timer = threading.Timer(args.drain_delay, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()

    platform = Platform(settings)

    async def serve() -> None:
        app = create_app(platform, host=settings.host)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=args.drain_timeout,
        )
        server = DrainingServer(config)
        print(f"quarry serving on http://{settings.host}:{settings.port}", file=sys.stderr)
        await server.serve()
        if not server.started:
            raise SystemExit(1)

    _run(serve())
    return 0


def _quickstart(settings: Settings, args: argparse.Namespace) -> int:
    """Every stage of the loop in a fresh data directory, then serve (unless ``--no-serve``)."""
    import time

    from app.cli import quickstart

    fresh = settings.data_dir / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    return int(_run(quickstart.run(settings.replace(data_dir=fresh), serve=not args.no_serve)))


def _worker(settings: Settings, args: argparse.Namespace) -> int:

    from app.kernel.tasks import run_worker

    if settings.broker_url.startswith("memory://"):
        raise ConfigError(
            "QUARRY_BROKER_URL is memory://, so tasks run inside `quarry serve`;"
            " set it to redis://... to run separate workers"
        )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="quarry-loop", daemon=True)
    thread.start()
    platform = Platform(settings)
    asyncio.run_coroutine_threadsafe(platform.start(), loop).result()
    queues = {q.strip() for q in args.queues.split(",")} if args.queues else None
    print(f"quarry worker: {', '.join(platform.built) or 'no modules'}", file=sys.stderr)
    try:
        run_worker(platform.tasks, queues=queues, threads=args.threads)
    finally:
        asyncio.run_coroutine_threadsafe(platform.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    for spec in AVAILABLE_MODULES:
        if settings.hosts(spec.name) and spec.migrations:
            db = Database(spec.name, settings.database_url(spec.name))
            try:
                db.migrate(spec.migrations)
            finally:
                db.dispose()
            print(f"{spec.name}: migrated ({db.url.split('://', 1)[0]})")
    return 0


def _modules(settings: Settings, args: argparse.Namespace) -> int:
    if args.graph:
        from app.cli.graph import module_graph

        print(module_graph(AVAILABLE_MODULES), end="")
        return 0
    for spec in AVAILABLE_MODULES:
        if spec.name in settings.remotes:
            where = f"remote {settings.remotes[spec.name]}"
        elif settings.hosts(spec.name):
            where = "local"
        else:
            where = "not hosted"
        version = "{}.{}".format(*spec.contract_version)
        print(f"{spec.name:<12} contract {version:<6} {where}")
    return 0


# --- keys ------------------------------------------------------------------------------------


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    store = KeyStore(settings.keys_file)
    if args.keys_command == "create":
        info, secret = store.create(args.name, [s.strip() for s in args.scopes.split(",")])
        print(f"created key {info.id} ({info.name}) with scopes {', '.join(sorted(info.scopes))}")
        print("store it now; it is not shown again:")
        print(secret)
    elif args.keys_command == "list":
        for info in store.list():
            state = "revoked" if info.revoked else "active"
            print(f"{info.id}  {info.name:<20} {','.join(sorted(info.scopes)):<30} {state}")
    else:
        info = store.revoke(args.key_id)
        print(f"revoked key {info.id} ({info.name})")
    return 0


# --- events ----------------------------------------------------------------------------------


def _events(settings: Settings, args: argparse.Namespace) -> int:
    # Publishers keep failed deliveries (memory://), subscribers their inbox (redis://).
    modules = [
        s for s in AVAILABLE_MODULES if (s.publishes or s.subscribes) and settings.hosts(s.name)
    ]
    if args.module:
        modules = [s for s in modules if s.name == args.module]
    for spec in modules:
        db = Database(spec.name, settings.database_url(spec.name))
        try:
            if args.events_command == "failed":
                rows = list_failed(db, spec.name) if spec.publishes else []
                rows += list_failed_inbox(db, spec.name) if spec.subscribes else []
                for row in rows:
                    print(json.dumps({"module": spec.name, **_plain(row)}))
            else:
                count = 0
                if spec.publishes:
                    count += retry_failed(
                        db, spec.name, event_id=args.event, subscriber=args.subscriber
                    )
                if spec.subscribes and args.subscriber in (None, spec.name):
                    count += retry_failed_inbox(db, spec.name, event_id=args.event)
                print(f"{spec.name}: {count} failed deliveries queued again")
        finally:
            db.dispose()
    return 0


# --- train ------------------------------------------------------------------------------------


def _train(settings: Settings, args: argparse.Namespace) -> int:
    """Submit a job spec (or follow ``--job``) and show its progress until it ends."""
    import msgspec

    from app.bootstrap import remote_clients
    from contracts.training import GetTrainingJob, SubmitTrainingJob, TrainingJobSpec

    spec = None
    if args.job is None:
        if args.spec is None:
            raise ConfigError("give a job spec file (quarry train SPEC.json) or --job ID")
        try:
            raw = sys.stdin.buffer.read() if args.spec == "-" else Path(args.spec).read_bytes()
            spec = msgspec.json.decode(raw, type=TrainingJobSpec)
        except OSError as exc:
            raise ConfigError(f"cannot read {args.spec}: {exc.strerror}") from None
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{args.spec} is not a valid job spec: {exc}") from None

    async def follow(training: Any) -> Any:
        if spec is not None:
            job = await training.submit_job(SubmitTrainingJob(spec=spec))
        else:
            job = await training.get_job(GetTrainingJob(id=args.job))
        bar = _ProgressBar(job.id)
        while job.status in ("queued", "running") and not args.no_wait:
            bar.show(job)
            await asyncio.sleep(0.5)
            job = await training.get_job(GetTrainingJob(id=job.id))
        bar.show(job, final=True)
        return job

    async def run() -> Any:
        if args.url:
            async with remote_clients(args.url, args.api_key) as clients:
                return await follow(clients["training"])
        async with Platform(settings) as platform:
            return await follow(platform.client("training", caller="cli"))

    job = _run(run())
    print(json.dumps(_plain(job), indent=2, default=str))
    return 0 if job.status in ("succeeded", "queued", "running") else 1


# --- rollouts ---------------------------------------------------------------------------------


def _rollouts(settings: Settings, args: argparse.Namespace) -> int:
    """List, show, promote or abort progressive rollouts; prints JSON."""
    from app.bootstrap import remote_clients
    from contracts.inference import AbortRollout, GetRollout, ListRollouts, PromoteRollout

    async def ask(inference: Any) -> Any:
        command = args.rollouts_command
        if command == "list":
            page = await inference.list_rollouts(
                ListRollouts(deployment=args.deployment, limit=args.limit)
            )
            return {"items": [_plain(r) for r in page.items], "next_cursor": page.next_cursor}
        if command == "show":
            return _plain(await inference.get_rollout(GetRollout(id=args.id)))
        kind = PromoteRollout if command == "promote" else AbortRollout
        asked = kind(id=args.id, **({"reason": args.reason} if args.reason else {}))
        done = await getattr(inference, f"{command}_rollout")(asked)
        return _plain(done)

    async def run() -> Any:
        if args.url:
            async with remote_clients(args.url, args.api_key) as clients:
                return await ask(clients["inference"])
        async with Platform(settings) as platform:
            return await ask(platform.client("inference", caller="cli"))

    print(json.dumps(_run(run()), indent=2, default=str))
    return 0


class _ProgressBar:
    """A one-line progress bar on stderr (one line per change when it is not a terminal)."""

    WIDTH = 30

    def __init__(self, job_id: str) -> None:
        self._job_id = job_id
        self._last = ""
        self._tty = sys.stderr.isatty()

    def show(self, job: Any, *, final: bool = False) -> None:
        done = job.epoch / job.epochs if job.epochs else 0.0
        filled = int(self.WIDTH * min(done, 1.0))
        metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(job.metrics.items())[:4])
        line = (
            f"[train] {self._job_id[:12]} {job.status:<9} epoch {job.epoch}/{job.epochs or '?'}"
            f" |{'#' * filled}{'.' * (self.WIDTH - filled)}| {metrics}"
        )
        if final and job.error:
            line += f" error: {job.error}"
        if line == self._last:
            return
        self._last = line
        end = "\n" if final or not self._tty else ""
        print(("\r" if self._tty else "") + line, end=end, file=sys.stderr, flush=True)


def _plain(row: Any) -> dict[str, Any]:
    import msgspec

    return dict(msgspec.to_builtins(row))


# --- parser ----------------------------------------------------------------------------------


def _modules_parser(sub: Any) -> None:
    """``quarry modules [--graph]``."""
    modules = sub.add_parser("modules", help="list modules and where they run")
    modules.add_argument(
        "--graph", action="store_true", help="print the module graph as a Mermaid flowchart"
    )
    modules.set_defaults(handler=_modules)


def _rollouts_parser(sub: Any) -> None:
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
    for cmd in rollouts_sub.choices.values():
        cmd.add_argument("--url", help="a running server (default: run the platform in-process)")
        cmd.add_argument("--api-key", help="an API key with the read or admin scope (with --url)")
    rollouts.set_defaults(handler=_rollouts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quarry", description="Quarry ML platform")
    parser.add_argument("--config", help="a quarry.toml file (default ./quarry.toml)")
    parser.add_argument("--data-dir", help="where embedded data lives (QUARRY_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--modules", help="modules to host (QUARRY_MODULES), e.g. registry,features")
    serve.add_argument("--host", help="address to bind (QUARRY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (QUARRY_PORT, default 8000)")
    serve.add_argument("--drain-timeout", type=int, default=15, help="seconds to finish requests")
    serve.add_argument(
        "--drain-delay",
        type=float,
        default=2.0,
        help="seconds /readyz fails before the listener closes on SIGTERM",
    )
    serve.set_defaults(handler=_serve)

    worker = sub.add_parser("worker", help="run task workers (needs QUARRY_BROKER_URL=redis://)")
    worker.add_argument("--modules", help="modules whose tasks to run (default: all hosted)")
    worker.add_argument("--queues", help="comma-separated queues (default: every declared one)")
    worker.add_argument("--threads", type=int, default=8, help="worker threads")
    worker.set_defaults(handler=_worker)

    migrate = sub.add_parser("migrate", help="upgrade every hosted module's database")
    migrate.add_argument("--modules", help="modules to migrate (default: every hosted one)")
    migrate.set_defaults(handler=_migrate)

    _modules_parser(sub)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (shown once)")
    create.add_argument("--scopes", required=True, help="comma-separated: admin,read,predict,...")
    create.add_argument("--name", default="key", help="a label for the key")
    keys_sub.add_parser("list", help="list keys (never the secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    keys.set_defaults(handler=_keys)

    quick = sub.add_parser(
        "quickstart", help="ingest, train, deploy, drift, retrain and roll out, then serve"
    )
    quick.add_argument("--host", help="address to serve on (default 127.0.0.1)")
    quick.add_argument("--port", type=int, help="port to serve on (default 8000)")
    quick.add_argument("--no-serve", action="store_true", help="exit after the rollout stage")
    quick.set_defaults(handler=_quickstart)

    train = sub.add_parser("train", help="submit a training job and follow it")
    train.add_argument("spec", nargs="?", help="the job spec as JSON (a file, or - for stdin)")
    train.add_argument("--job", help="follow an existing job instead of submitting one")
    train.add_argument("--url", help="a running server (default: run the platform in-process)")
    train.add_argument("--api-key", help="an API key with the train scope (with --url)")
    train.add_argument("--no-wait", action="store_true", help="answer once the job is queued")
    train.set_defaults(handler=_train)

    _rollouts_parser(sub)

    events = sub.add_parser("events", help="inspect and resubmit failed event deliveries")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    for name, text in (("failed", "list failed deliveries"), ("retry", "deliver failed again")):
        cmd = events_sub.add_parser(name, help=text)
        cmd.add_argument("--module", help="the publishing module (default: all)")
        if name == "retry":
            cmd.add_argument("--event", help="only this event id")
            cmd.add_argument("--subscriber", help="only this subscriber")
    events.set_defaults(handler=_events)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quarry`` command."""
    args = _parser().parse_args(argv)
    overrides = {
        "data_dir": args.data_dir,
        "modules": getattr(args, "modules", None),
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
    }
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        settings = configure(load_settings(config_file=args.config, **overrides))
        return handler(settings, args)
    except ConfigError as exc:
        print(f"quarry: configuration error: {exc}", file=sys.stderr)
        return 2
    except QuarryError as exc:
        print(f"quarry: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
