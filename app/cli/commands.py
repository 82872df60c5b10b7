"""The ``quarry`` command: one handler per command, and :func:`main`, which runs one.

A failing command prints one line on stderr naming what failed and the setting or flag to
change, and exits with a documented status (:mod:`app.cli.fatal`); ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from app.bootstrap import AVAILABLE_MODULES, Platform, configure
from app.cli.client_commands import CLIENT_HANDLERS
from app.cli.example_model import example_model
from app.cli.fatal import EXIT_INTERRUPTED, report
from app.cli.materialize import materialize
from app.cli.parser import build_parser
from app.cli.reach import quiet, resolve_target
from app.cli.rollback import rollback
from app.cli.serving import quickstart, run, serve, worker
from app.kernel.auth import KeyStore
from app.kernel.db import Database
from app.kernel.events import list_failed, list_failed_inbox, retry_failed, retry_failed_inbox
from app.kernel.module import ModuleSpec
from app.kernel.reach import check_reachable, database_dependency
from app.kernel.settings import ConfigError, Settings, load_settings
from contracts.inference import InferenceService
from contracts.training import TrainingJob, TrainingJobSpec, TrainingService

__all__ = ["HANDLERS", "main"]


def _reachable_databases(
    settings: Settings, specs: Sequence[ModuleSpec]
) -> list[tuple[ModuleSpec, str]]:
    """Each module of ``specs`` with its database URL, once every database has answered."""
    found = [(spec, settings.database_url(spec.name)) for spec in specs]
    check_reachable(database_dependency(spec.name, url) for spec, url in found)
    return found


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    migrate_hosted(settings)
    return 0


def migrate_hosted(settings: Settings, *, quiet: bool = False) -> None:
    """Bring the database of every module ``settings`` host to its newest revision."""
    hosted = [s for s in AVAILABLE_MODULES if settings.hosts(s.name) and s.migrations]
    for spec, url in _reachable_databases(settings, hosted):
        if not spec.migrations:
            continue
        db = Database(spec.name, url)
        try:
            db.migrate(spec.migrations)
        finally:
            db.dispose()
        if not quiet:
            print(f"{spec.name}: migrated ({url.split('://', 1)[0]})")


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


# --- keys / events ---------------------------------------------------------------------------


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


def _events(settings: Settings, args: argparse.Namespace) -> int:
    # Publishers keep failed deliveries (memory://), subscribers their inbox (redis://).
    specs = [
        s
        for s in AVAILABLE_MODULES
        if (s.publishes or s.subscribes)
        and settings.hosts(s.name)
        and args.module in (None, s.name)
    ]
    for spec, url in _reachable_databases(settings, specs):
        db = Database(spec.name, url)
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
    from app.bootstrap import remote_clients
    from contracts.training import GetTrainingJob, SubmitTrainingJob

    spec: TrainingJobSpec | None = None
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

    async def follow(training: TrainingService) -> TrainingJob:
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

    async def submitted() -> TrainingJob:
        if args.url:
            async with remote_clients(args.url, args.api_key) as clients:
                return await follow(clients["training"])
        async with Platform(quiet(settings)) as platform:
            return await follow(platform.client("training", caller="cli"))

    job = run(submitted())
    print(json.dumps(_plain(job), indent=2, default=str))
    return 0 if job.status in ("succeeded", "queued", "running") else 1


# --- rollouts ---------------------------------------------------------------------------------


def _rollouts(settings: Settings, args: argparse.Namespace) -> int:
    """List, show, promote or abort progressive rollouts; prints JSON."""
    from app.bootstrap import remote_clients
    from contracts.inference import AbortRollout, GetRollout, ListRollouts, PromoteRollout

    async def ask(inference: InferenceService) -> dict[str, Any]:
        command = args.rollouts_command
        if command == "list":
            page = await inference.list_rollouts(
                ListRollouts(deployment=args.deployment, limit=args.limit)
            )
            return {"items": [_plain(r) for r in page.items], "next_cursor": page.next_cursor}
        if command == "show":
            return _plain(await inference.get_rollout(GetRollout(id=args.id)))
        reason = {"reason": args.reason} if args.reason else {}
        if command == "promote":
            return _plain(await inference.promote_rollout(PromoteRollout(id=args.id, **reason)))
        return _plain(await inference.abort_rollout(AbortRollout(id=args.id, **reason)))

    async def answer() -> dict[str, Any]:
        if args.url:
            async with remote_clients(args.url, args.api_key) as clients:
                return await ask(clients["inference"])
        async with Platform(quiet(settings)) as platform:
            return await ask(platform.client("inference", caller="cli"))

    print(json.dumps(run(answer()), indent=2, default=str))
    return 0


class _ProgressBar:
    """A one-line progress bar on stderr (one line per change when it is not a terminal)."""

    WIDTH = 30

    def __init__(self, job_id: str) -> None:
        self._job_id = job_id
        self._last = ""
        self._tty = sys.stderr.isatty()

    def show(self, job: TrainingJob, *, final: bool = False) -> None:
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


def _plain(row: msgspec.Struct) -> dict[str, Any]:
    return dict(msgspec.to_builtins(row))


# --- main ------------------------------------------------------------------------------------

HANDLERS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": serve,
    "worker": worker,
    "migrate": _migrate,
    "modules": _modules,
    "keys": _keys,
    "quickstart": quickstart,
    "train": _train,
    "rollouts": _rollouts,
    "rollback": rollback,
    "materialize": materialize,
    "events": _events,
    "example-model": example_model,
    **CLIENT_HANDLERS,
}
"""The handler of each command: settings and parsed arguments in, exit status out."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quarry`` command: run one command and answer its exit status.

    Any failure is one line on stderr (after its traceback with ``--debug``), with the status
    :mod:`app.cli.fatal` documents.
    """
    args = build_parser().parse_args(argv)
    resolve_target(args)
    overrides = {
        "data_dir": args.data_dir,
        "modules": getattr(args, "modules", None),
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
    }
    settings: Settings | None = None
    try:
        settings = configure(load_settings(config_file=args.config, **overrides))
        return HANDLERS[args.command](settings, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # every failure ends here, as one readable line
        return report(exc, debug=args.debug, settings=settings)


if __name__ == "__main__":
    sys.exit(main())
