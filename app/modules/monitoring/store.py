"""The monitoring module's tables (every name prefixed ``monitoring_``) and their queries.

Prediction records keep outputs, and inputs for the sampled ones, as msgpack of the contract's
``Tensor`` maps. Times are epoch seconds (floats): windows compare simply and index well.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from contracts.common import Tensor
from contracts.inference import PredictionRecord
from contracts.monitoring import DriftReport, Feedback

__all__ = [
    "Logged",
    "deployment_known",
    "deployment_latencies",
    "feedback_for",
    "get_feedback",
    "get_report",
    "insert_feedback",
    "insert_records",
    "insert_report",
    "latencies",
    "logged",
    "page_reports",
    "prune",
    "recent_versions",
]

metadata = sa.MetaData()

predictions = sa.Table(
    "monitoring_predictions",
    metadata,
    sa.Column("prediction_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("deployment", sa.String(128), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("outputs", sa.LargeBinary, nullable=True),
    sa.Column("inputs", sa.LargeBinary, nullable=True),
)

feedback = sa.Table(
    "monitoring_feedback",
    metadata,
    sa.Column("prediction_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("label", sa.JSON, nullable=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
)

reports = sa.Table(
    "monitoring_drift_reports",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
)

_TENSORS = msgspec.msgpack.Decoder(dict[str, Tensor])
_ENCODER = msgspec.msgpack.Encoder()


def _pack(tensors: dict[str, Tensor] | None) -> bytes | None:
    return None if not tensors else _ENCODER.encode(tensors)


def unpack(data: bytes | None) -> dict[str, Tensor]:
    """Tensors stored by :func:`insert_records` (empty when none were)."""
    return {} if not data else _TENSORS.decode(data)


def insert_records(conn: Connection, records: Sequence[PredictionRecord]) -> int:
    """Store records; one already stored (same prediction id, in the database or earlier in
    ``records``) is left alone. Answers how many were new.

    Rows go to the driver as tuples of a plain ``INSERT ... ON CONFLICT DO NOTHING``: SQLAlchemy's
    per-row processing and a query for the ids already stored were more than half of the cost of
    storing a record. psycopg pipelines an ``executemany``. sqlite3 would step the statement once
    per row, handing the interpreter lock to the request path and back each time, so SQLite gets
    ``INSERT ... VALUES (...), (...), ...`` of up to ``_ROWS_PER_INSERT`` rows instead (a third
    less per record)."""
    if not records:
        return 0
    rows = [
        (
            r.prediction_id,
            r.model,
            r.version,
            r.deployment,
            r.status,
            r.latency_s,
            r.at.timestamp(),
            _pack(r.outputs),
            _pack(r.inputs),
        )
        for r in records
    ]
    paramstyle = conn.dialect.paramstyle
    if paramstyle != "qmark":
        return max(0, conn.exec_driver_sql(_insert_sql(paramstyle, 1), rows).rowcount)
    stored = 0
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        flat = tuple(itertools.chain.from_iterable(chunk))
        stored += max(0, conn.exec_driver_sql(_insert_sql(paramstyle, len(chunk)), flat).rowcount)
    return stored


_COLUMNS = tuple(predictions.columns.keys())
"""The order of each row handed to the driver (the table's)."""
_ROWS_PER_INSERT = 100
"""Rows in one SQLite ``INSERT``: 900 parameters, under SQLite's oldest limit (999)."""


@functools.cache
def _insert_sql(paramstyle: str, rows: int) -> str:
    """The driver's ``INSERT`` of ``rows`` records (``?`` for sqlite3, ``%s`` for psycopg)."""
    mark = "?" if paramstyle == "qmark" else "%s"
    row = f"({', '.join([mark] * len(_COLUMNS))})"
    return (
        f"INSERT INTO {predictions.name} ({', '.join(_COLUMNS)})"
        f" VALUES {', '.join([row] * rows)}"
        " ON CONFLICT (prediction_id) DO NOTHING"
    )


def _scope(query: Any, model: str, version: int | None, since: float, until: float) -> Any:
    query = query.where(
        predictions.c.model == model, predictions.c.at >= since, predictions.c.at < until
    )
    if version is not None:
        query = query.where(predictions.c.version == version)
    return query


def latencies(
    conn: Connection, model: str, version: int | None, since: float, until: float
) -> list[tuple[float, float, str]]:
    """``(at, latency_s, status)`` of every record in the window, oldest first."""
    query = _scope(
        sa.select(predictions.c.at, predictions.c.latency_s, predictions.c.status),
        model,
        version,
        since,
        until,
    ).order_by(predictions.c.at)
    return [(r.at, r.latency_s, r.status) for r in conn.execute(query)]


def deployment_latencies(
    conn: Connection, deployment: str, since: float, until: float
) -> list[tuple[float, float, str]]:
    """``(at, latency_s, status)`` of every record served through ``deployment`` in the
    window, oldest first."""
    query = (
        sa.select(predictions.c.at, predictions.c.latency_s, predictions.c.status)
        .where(
            predictions.c.deployment == deployment,
            predictions.c.at >= since,
            predictions.c.at < until,
        )
        .order_by(predictions.c.at)
    )
    return [(r.at, r.latency_s, r.status) for r in conn.execute(query)]


def deployment_known(conn: Connection, deployment: str) -> bool:
    """Whether any record kept was served through ``deployment``."""
    query = sa.select(predictions.c.prediction_id).where(predictions.c.deployment == deployment)
    return conn.execute(query.limit(1)).first() is not None


@dataclass(frozen=True, slots=True)
class Logged:
    """A stored successful prediction's outputs (and inputs when sampled)."""

    prediction_id: str
    version: int | None
    at: float
    outputs: dict[str, Tensor]
    inputs: dict[str, Tensor]


def logged(
    conn: Connection,
    model: str,
    version: int | None,
    since: float,
    until: float,
    *,
    with_inputs: bool = False,
    limit: int = 20_000,
) -> list[Logged]:
    """The newest ``limit`` successful predictions in the window (only sampled ones when
    ``with_inputs``), oldest first."""
    columns = [predictions.c.prediction_id, predictions.c.version, predictions.c.at]
    columns += [predictions.c.outputs, predictions.c.inputs]
    query = _scope(sa.select(*columns), model, version, since, until).where(
        predictions.c.status == "ok"
    )
    if with_inputs:
        query = query.where(predictions.c.inputs.is_not(None))
    rows = conn.execute(query.order_by(predictions.c.at.desc()).limit(limit)).all()
    return [
        Logged(r.prediction_id, r.version, r.at, unpack(r.outputs), unpack(r.inputs))
        for r in reversed(rows)
    ]


def prediction(conn: Connection, prediction_id: str) -> tuple[str, int | None] | None:
    """``(model, version)`` of a stored prediction, or ``None``."""
    row = conn.execute(
        sa.select(predictions.c.model, predictions.c.version).where(
            predictions.c.prediction_id == prediction_id
        )
    ).first()
    return None if row is None else (row.model, row.version)


def insert_feedback(conn: Connection, item: Feedback) -> None:
    """Store feedback (the caller checked it is the first for its prediction)."""
    conn.execute(
        feedback.insert().values(
            prediction_id=item.prediction_id,
            model=item.model,
            version=item.version,
            label=item.label,
            value=item.value,
            at=item.at.timestamp(),
        )
    )


def get_feedback(conn: Connection, prediction_id: str) -> Feedback | None:
    """Feedback already given for a prediction, or ``None``."""
    row = conn.execute(sa.select(feedback).where(feedback.c.prediction_id == prediction_id)).first()
    if row is None:
        return None
    return Feedback(
        prediction_id=row.prediction_id,
        model=row.model,
        version=row.version,
        label=row.label,
        value=row.value,
        at=datetime.fromtimestamp(row.at, tz=UTC),
    )


def feedback_for(
    conn: Connection, model: str, version: int | None, since: float, until: float
) -> list[tuple[float, int | None, dict[str, Tensor], Any, float | None]]:
    """``(at, version, outputs, label, value)`` for predictions in the window with feedback."""
    query = (
        sa.select(
            predictions.c.at,
            predictions.c.version,
            predictions.c.outputs,
            feedback.c.label,
            feedback.c.value,
        )
        .join(feedback, feedback.c.prediction_id == predictions.c.prediction_id)
        .order_by(predictions.c.at)
    )
    query = _scope(query, model, version, since, until)
    return [(r.at, r.version, unpack(r.outputs), r.label, r.value) for r in conn.execute(query)]


def insert_report(conn: Connection, report: DriftReport) -> None:
    """Store a drift report."""
    conn.execute(
        reports.insert().values(
            id=report.id,
            model=report.model,
            version=report.version,
            created_at=report.created_at.timestamp(),
            body=msgspec.to_builtins(report),
        )
    )


def get_report(conn: Connection, report_id: str) -> DriftReport | None:
    """A drift report by id, or ``None``."""
    row = conn.execute(sa.select(reports.c.body).where(reports.c.id == report_id)).first()
    return None if row is None else msgspec.convert(row.body, DriftReport)


def page_reports(
    conn: Connection, model: str, limit: int, cursor: tuple[float, str] | None
) -> tuple[list[DriftReport], tuple[float, str] | None]:
    """Up to ``limit`` of ``model``'s reports, newest first, after ``cursor``."""
    query = (
        sa.select(reports.c.id, reports.c.created_at, reports.c.body)
        .where(reports.c.model == model)
        .order_by(reports.c.created_at.desc(), reports.c.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        created, last = cursor
        query = query.where(
            sa.or_(
                reports.c.created_at < created,
                sa.and_(reports.c.created_at == created, reports.c.id < last),
            )
        )
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [msgspec.convert(r.body, DriftReport) for r in rows]
    return items, ((rows[-1].created_at, rows[-1].id) if more else None)


def recent_versions(conn: Connection, since: float) -> list[tuple[str, int]]:
    """``(model, version)`` pairs with sampled inputs logged since ``since``."""
    query = (
        sa.select(predictions.c.model, predictions.c.version)
        .where(predictions.c.at >= since, predictions.c.inputs.is_not(None))
        .where(predictions.c.version.is_not(None))
        .distinct()
    )
    return [(r.model, r.version) for r in conn.execute(query)]


def prune(conn: Connection, before: float) -> int:
    """Delete records (and their feedback) older than ``before``; answers how many records."""
    old = sa.select(predictions.c.prediction_id).where(predictions.c.at < before)
    conn.execute(feedback.delete().where(feedback.c.prediction_id.in_(old)))
    return conn.execute(predictions.delete().where(predictions.c.at < before)).rowcount or 0


def newest_report(
    conn: Connection, model: str, version: int | None, since: float
) -> DriftReport | None:
    """The newest drift report of ``model`` (and ``version``) made since ``since``."""
    query = sa.select(reports.c.body).where(reports.c.model == model, reports.c.created_at >= since)
    if version is not None:
        query = query.where(reports.c.version == version)
    row = conn.execute(query.order_by(reports.c.created_at.desc()).limit(1)).first()
    return None if row is None else msgspec.convert(row.body, DriftReport)
