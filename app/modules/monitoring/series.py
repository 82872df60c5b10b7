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
    counts = np.bincount(index, minlength=buckets)
    quantiles = _quantiles(index, latency, counts, (0.5, 0.95, 0.99))
    codes: list[dict[str, int]] = [{} for _ in range(buckets)]
    for i, (_, _, status) in enumerate(rows):
        if status != "ok":
            found = codes[index[i]]
            found[status] = found.get(status, 0) + 1
    points = []
    for b in range(buckets):
        requests, errors = int(counts[b]), sum(codes[b].values())
        start = since + b * step
        known = requests > 0
        points.append(
            SeriesPoint(
                start=_utc(start),
                end=_utc(start + step),
                requests=requests,
                errors=errors,
                qps=requests / step,
                error_rate=errors / requests if known else 0.0,
                latency_p50_s=float(quantiles[0, b]) if known else None,
                latency_p95_s=float(quantiles[1, b]) if known else None,
                latency_p99_s=float(quantiles[2, b]) if known else None,
                errors_by_code=codes[b],
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


def _quantiles(
    index: np.ndarray, values: np.ndarray, counts: np.ndarray, qs: tuple[float, ...]
) -> np.ndarray:
    """Per bucket, each quantile of its ``values`` (``[len(qs), buckets]``), interpolated as
    :func:`numpy.quantile` does by default; 0 where a bucket is empty."""
    order = np.lexsort((values, index))
    ordered = values[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    last = np.maximum(counts - 1, 0)
    found = np.zeros((len(qs), len(counts)))
    if not len(ordered):
        return found
    for n, q in enumerate(qs):
        position = q * last
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, last)
        fraction = position - low
        at_low = ordered[np.minimum(starts + low, len(ordered) - 1)]
        at_high = ordered[np.minimum(starts + high, len(ordered) - 1)]
        found[n] = np.where(counts > 0, at_low + (at_high - at_low) * fraction, 0.0)
    return found


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
