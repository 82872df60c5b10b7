"""``quarry materialize VIEW``: load a feature view's source into the stores, with a progress bar.

The run is a task of the features module, on the server named by ``--url`` / ``QUARRY_URL`` or in
this process (:mod:`app.cli.reach`); the command queues it, then follows its progress until it
ends (``--no-wait`` only queues it). A failed run exits with status 1 and its reason.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from app.cli.output import print_json
from app.cli.reach import reach
from app.cli.serving import run

if TYPE_CHECKING:
    from app.kernel.settings import Settings
    from contracts.features import Materialization

__all__ = ["add_parser", "materialize", "progress_line"]

POLL_S = 0.5
"""How often the command asks how the run is going."""
_BAR = 30


def add_parser(sub: Any) -> None:
    """Declare ``quarry materialize VIEW [--start T] [--end T] [--chunk-rows N] [--no-wait]``."""
    cmd = sub.add_parser(
        "materialize", help="load a feature view's source into the offline and online stores"
    )
    cmd.add_argument("view", help="the feature view (it must have a source)")
    cmd.add_argument("--start", type=_moment, help="ISO 8601 (default: the view's watermark)")
    cmd.add_argument("--end", type=_moment, help="ISO 8601 (default: now)")
    cmd.add_argument("--chunk-rows", type=int, default=10_000, help="rows per chunk (10000)")
    cmd.add_argument("--no-wait", action="store_true", help="queue the run and return")
    cmd.add_argument("--json", action="store_true", help="print the final run as JSON")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def materialize(settings: Settings, args: argparse.Namespace) -> int:
    """Queue a materialization of ``args.view`` and follow it; exit 0 when it succeeded."""
    from contracts.features import GetMaterialization, Materialize

    async def follow() -> Materialization:
        async with reach(settings, args, "features") as features:
            job = await features.materialize(
                Materialize(
                    view=args.view, start=args.start, end=args.end, chunk_rows=args.chunk_rows
                )
            )
            while not args.no_wait and job.status in ("queued", "running"):
                _draw(job, sys.stderr)
                await asyncio.sleep(POLL_S)
                job = await features.get_materialization(GetMaterialization(id=job.id))
            return job  # type: ignore[no-any-return]

    job = run(follow())
    if sys.stderr.isatty() and not args.no_wait:
        sys.stderr.write("\n")
    if args.json:
        print_json(job)
    else:
        print(progress_line(job) if job.status != "failed" else f"{job.view}: failed")
    if job.status == "failed":
        print(f"materialization {job.id} failed: {job.error}", file=sys.stderr)
        return 1
    return 0


def _draw(job: Materialization, stream: TextIO) -> None:
    if stream.isatty():
        stream.write("\r" + progress_line(job))
        stream.flush()


def progress_line(job: Materialization) -> str:
    """``view [#####.....]  45%  12,000/26,000 rows  3,100 rows/s  running`` (parts unknown
    yet are left out)."""
    share = (job.percent or 0.0) / 100
    filled = round(share * _BAR)
    parts = [f"{job.view} [{'#' * filled}{'.' * (_BAR - filled)}]"]
    if job.percent is not None:
        parts.append(f"{job.percent:5.1f}%")
    total = f"/{job.rows_total:,}" if job.rows_total is not None else ""
    parts.append(f"{job.rows_done:,}{total} rows")
    if job.rows_per_s is not None:
        parts.append(f"{job.rows_per_s:,.0f} rows/s")
    parts.append(job.status)
    return "  ".join(parts)
