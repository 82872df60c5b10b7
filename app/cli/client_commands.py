"""``quarry models|deployments|jobs|features``: thin commands over the modules' contracts.

Each one calls a contract method, on the server named by ``--url`` / ``QUARRY_URL`` or in this
process (:mod:`app.cli.reach`), and prints a table, or the answer as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias

from app.cli.output import Column, print_json, print_record, print_table
from app.cli.reach import reach
from app.cli.serving import run
from app.kernel.settings import Settings
from contracts.features import ListFeatureServices, ListFeatureViews
from contracts.inference import GetDeployment, ListDeployments
from contracts.registry import ArchiveVersion, GetModel, ListModels, ListVersions, SetAlias
from contracts.training import CancelTrainingJob, GetTrainingJob, ListTrainingJobs

__all__ = ["CLIENT_HANDLERS", "add_client_parsers"]

_Commands: TypeAlias = "argparse._SubParsersAction[Any]"
_Ask: TypeAlias = Callable[[Any, argparse.Namespace], Coroutine[Any, Any, None]]

_MODEL_COLUMNS: list[Column] = [
    ("name", lambda m: m.name),
    ("latest", lambda m: m.latest_version),
    ("versions", lambda m: m.version_count),
    ("aliases", lambda m: m.aliases),
    ("updated", lambda m: m.updated_at),
]
_VERSION_COLUMNS: list[Column] = [
    ("version", lambda v: v.version),
    ("status", lambda v: v.status),
    ("aliases", lambda v: v.aliases),
    ("inputs", lambda v: [f"{i.name}{i.shape}" for i in v.signature.inputs]),
    ("metrics", lambda v: v.metrics),
    ("created", lambda v: v.created_at),
]
_DEPLOYMENT_COLUMNS: list[Column] = [
    ("name", lambda d: d.name),
    ("routes", lambda d: [f"{r.model} {r.weight:g}" for r in d.routes]),
    ("shadows", lambda d: d.shadows),
    ("updated", lambda d: d.updated_at),
]
_JOB_COLUMNS: list[Column] = [
    ("id", lambda j: j.id),
    ("model", lambda j: j.spec.model),
    ("status", lambda j: j.status),
    ("epoch", lambda j: f"{j.epoch}/{j.epochs or '?'}"),
    ("version", lambda j: j.version),
    ("updated", lambda j: j.updated_at),
]
_VIEW_COLUMNS: list[Column] = [
    ("name", lambda v: v.name),
    ("version", lambda v: v.version),
    ("entities", lambda v: v.entities),
    ("features", lambda v: [f.name for f in v.features]),
]
_SERVICE_COLUMNS: list[Column] = [
    ("name", lambda s: s.name),
    ("version", lambda s: s.version),
    ("features", lambda s: s.features),
    ("transforms", lambda s: len(s.transforms)),
]


def _page(answer: Any, args: argparse.Namespace, columns: list[Column], empty: str) -> None:
    if args.json:
        print_json(answer)
        return
    print_table(answer.items, columns, empty=empty)
    if answer.next_cursor:
        print(f"(more: --cursor {answer.next_cursor})")


# --- models -----------------------------------------------------------------------------------


async def _models(registry: Any, args: argparse.Namespace) -> None:
    command = args.models_command
    if command == "list":
        page = await registry.list_models(
            ListModels(limit=args.limit, cursor=args.cursor, prefix=args.prefix)
        )
        _page(page, args, _MODEL_COLUMNS, "no models")
    elif command == "show":
        model = await registry.get_model(GetModel(name=args.name))
        versions = await registry.list_versions(ListVersions(name=args.name, limit=args.limit))
        if args.json:
            print_json({"model": model, "versions": versions.items})
            return
        print_record(
            {
                "model": model.name,
                "description": model.description or None,
                "tags": model.tags,
                "aliases": model.aliases,
                "created": model.created_at,
            }
        )
        print()
        print_table(versions.items, _VERSION_COLUMNS, empty="no versions")
    elif command == "alias":
        alias = await registry.set_alias(
            SetAlias(name=args.name, alias=args.alias, version=args.version, reason=args.reason)
        )
        _done(args, alias, f"{args.name}@{args.alias} -> version {args.version}")
    else:
        archive = ArchiveVersion(name=args.name, version=args.version, archived=not args.restore)
        version = await registry.archive_version(archive)
        _done(args, version, f"{args.name}:{args.version} is {version.status}")


# --- deployments, jobs, features --------------------------------------------------------------


async def _deployments(inference: Any, args: argparse.Namespace) -> None:
    if args.deployments_command == "list":
        page = await inference.list_deployments(
            ListDeployments(limit=args.limit, cursor=args.cursor)
        )
        _page(page, args, _DEPLOYMENT_COLUMNS, "no deployments")
        return
    deployment = await inference.get_deployment(GetDeployment(name=args.name))
    if args.json:
        print_json(deployment)
        return
    print_record(
        {
            "deployment": deployment.name,
            "shadows": deployment.shadows,
            "fallbacks": [f.model or "default" for f in deployment.fallbacks],
            "cache ttl (s)": deployment.cache_ttl_s,
            "updated": deployment.updated_at,
        }
    )
    print()
    print_table(
        deployment.routes,
        [("route", lambda r: r.model), ("weight", lambda r: r.weight)],
        empty="no routes",
    )


async def _jobs(training: Any, args: argparse.Namespace) -> None:
    command = args.jobs_command
    if command == "list":
        page = await training.list_jobs(
            ListTrainingJobs(limit=args.limit, cursor=args.cursor, status=args.status)
        )
        _page(page, args, _JOB_COLUMNS, "no training jobs")
        return
    if command == "cancel":
        job = await training.cancel_job(CancelTrainingJob(id=args.id))
        _done(args, job, f"job {job.id}: {job.status}, cancel requested")
        return
    job = await training.get_job(GetTrainingJob(id=args.id))
    if args.json:
        print_json(job)
        return
    print_record(
        {
            "job": job.id,
            "model": job.spec.model,
            "trainer": job.spec.trainer,
            "status": job.status,
            "epoch": f"{job.epoch}/{job.epochs or '?'}",
            "metrics": job.metrics,
            "version": job.version,
            "error": job.error,
            "created": job.created_at,
            "updated": job.updated_at,
        }
    )


async def _features(features: Any, args: argparse.Namespace) -> None:
    if args.features_command == "views":
        views = await features.list_views(ListFeatureViews(limit=args.limit, cursor=args.cursor))
        _page(views, args, _VIEW_COLUMNS, "no feature views")
    else:
        services = await features.list_services(
            ListFeatureServices(limit=args.limit, cursor=args.cursor)
        )
        _page(services, args, _SERVICE_COLUMNS, "no feature services")


def _done(args: argparse.Namespace, answer: Any, line: str) -> None:
    if args.json:
        print_json(answer)
    else:
        print(line)


def _handler(module: str, ask: _Ask) -> Callable[[Settings, argparse.Namespace], int]:
    def handle(settings: Settings, args: argparse.Namespace) -> int:
        async def call() -> None:
            async with reach(settings, args, module) as client:
                await ask(client, args)

        run(call())
        return 0

    return handle


CLIENT_HANDLERS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "models": _handler("registry", _models),
    "deployments": _handler("inference", _deployments),
    "jobs": _handler("training", _jobs),
    "features": _handler("features", _features),
}
"""The handler of each client command."""


# --- parsers ----------------------------------------------------------------------------------


def add_client_parsers(sub: _Commands) -> None:
    """Add ``models``, ``deployments``, ``jobs`` and ``features`` to the ``quarry`` command."""
    models = _group(sub, "models", "registered models: list, show, alias, archive")
    _listing(models.add_parser("list", help="models by name")).add_argument(
        "--prefix", help="only names starting with this"
    )
    show = _leaf(models.add_parser("show", help="a model and its versions"))
    show.add_argument("name")
    show.add_argument("--limit", type=int, default=50, help="versions to show (default 50)")
    alias = _leaf(models.add_parser("alias", help="point an alias at a version"))
    alias.add_argument("name")
    alias.add_argument("alias", help="e.g. champion")
    alias.add_argument("version", type=int)
    alias.add_argument("--reason", default="", help="kept in the alias history")
    archive = _leaf(models.add_parser("archive", help="archive a version (--restore to undo)"))
    archive.add_argument("name")
    archive.add_argument("version", type=int)
    archive.add_argument("--restore", action="store_true", help="make it ready again")

    deployments = _group(sub, "deployments", "deployments: list, show")
    _listing(deployments.add_parser("list", help="deployments by name"))
    _leaf(deployments.add_parser("show", help="a deployment and its routes")).add_argument("name")

    jobs = _group(sub, "jobs", "training jobs: list, show, cancel")
    _listing(jobs.add_parser("list", help="training jobs, newest first")).add_argument(
        "--status", help="only jobs in this status (queued, running, succeeded, ...)"
    )
    _leaf(jobs.add_parser("show", help="a job's state and metrics")).add_argument("id")
    _leaf(jobs.add_parser("cancel", help="stop a queued or running job")).add_argument("id")

    features = _group(sub, "features", "feature store: views, services")
    _listing(features.add_parser("views", help="feature views (latest versions)"))
    _listing(features.add_parser("services", help="feature services"))


def _group(sub: _Commands, name: str, text: str) -> _Commands:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text)
    group: _Commands = parser.add_subparsers(dest=f"{name}_command", required=True)
    return group


def _leaf(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    return parser


def _listing(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    _leaf(parser)
    parser.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    parser.add_argument("--cursor", help="where the previous page ended")
    return parser
