"""Traffic, errors and latency step by step over a window (:meth:`get_series`).

One query reads the window's ``(at, latency_s, status)`` (the newest :data:`MAX_ROWS` of them:
a busy model's week is summarised from its latest records), and numpy cuts them into steps.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.kernel.db import Database
from app.modules.monitoring.store import predictions
from contracts.common import InvalidInput, validate_name
from contracts.monitoring import MAX_SERIES_BUCKETS, GetSeries, Series, SeriesPoint

__all__ = ["MAX_ROWS", "read_series", "series_of"]

MAX_ROWS = 500_000
"""The most records one series reads (the newest of the window)."""
MAX_WINDOW_S = 90 * 86400.0


async def read_series(db: Database, request: GetSeries, *, now: float | None = None) -> Series:
    """The series ``request`` asks for, over the window ending ``now`` (the current time)."""
    if request.model is None and request.deployment is None:
        raise InvalidInput("a series needs a model or a deployment", details={"field": "model"})
    if request.model is not None:
        validate_name(request.model, what="model name")
    if request.deployment is not None:
        validate_name(request.deployment, what="deployment name")
    if not 0 < request.window_s <= MAX_WINDOW_S:
        raise InvalidInput(f"window must be between 0 and {MAX_WINDOW_S:.0f} seconds")
    if not 1 <= request.buckets <= MAX_SERIES_BUCKETS:
        raise InvalidInput(f"buckets must be between 1 and {MAX_SERIES_BUCKETS}")
    until = time.time() if now is None else now
    since = until - request.window_s
    rows = await db.read(lambda c: _records(c, request, since, until))
    return series_of(request, rows, since, until)


def _records(
    conn: Connection, request: GetSeries, since: float, until: float
) -> list[tuple[float, float, str]]:
    p = predictions
    query: Any = sa.select(p.c.at, p.c.latency_s, p.c.status).where(p.c.at >= since, p.c.at < until)
    if request.model is not None:
        query = query.where(p.c.model == request.model)
    if request.version is not None:
        query = query.where(p.c.version == request.version)
    if request.deployment is not None:
        query = query.where(p.c.deployment == request.deployment)
    query = query.order_by(p.c.at.desc()).limit(MAX_ROWS)
    return [(r.at, r.latency_s, r.status) for r in conn.execute(query)]


def series_of(
    request: GetSeries, rows: list[tuple[float, float, str]], since: float, until: float
) -> Series:
    """``rows`` (``(at, latency_s, status)``, any order) cut into the request's steps."""
    buckets = request.buckets
    step = (until - since) / buckets
    at = np.fromiter((r[0] for r in rows), dtype=np.float64, count=len(rows))
    latency = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    index = np.clip(((at - since) // step).astype(np.int64), 0, buckets - 1)
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(buckets + 1))
    points = []
    for b in range(buckets):
        taken = order[bounds[b] : bounds[b + 1]]
        codes: dict[str, int] = {}
        for i in taken:
            status = rows[i][2]
            if status != "ok":
                codes[status] = codes.get(status, 0) + 1
        requests, errors = len(taken), sum(codes.values())
        quantiles: list[float | None] = [None, None, None]
        if requests:
            quantiles = [float(q) for q in np.quantile(latency[taken], [0.5, 0.95, 0.99])]
        start = since + b * step
        points.append(
            SeriesPoint(
                start=_utc(start),
                end=_utc(start + step),
                requests=requests,
                errors=errors,
                qps=requests / step,
                error_rate=errors / requests if requests else 0.0,
                latency_p50_s=quantiles[0],
                latency_p95_s=quantiles[1],
                latency_p99_s=quantiles[2],
                errors_by_code=codes,
            )
        )
    return Series(
        model=request.model,
        version=request.version,
        deployment=request.deployment,
        window_s=until - since,
        step_s=step,
        points=points,
    )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
