"""The training module's tables (jobs, retraining policies and sagas) and the statements that
guard a job's life.

A job runs only while it holds the row: :func:`claim` takes a queued job, or a running one whose
heartbeat went stale (its worker died), and stamps it with a fresh ``owner``; every later write
of a run (:func:`beat`, :func:`progress`, :func:`finish`) names that owner, so a run that lost
the job can change nothing. Times are epoch seconds (floats) so that staleness compares simply.

A stored spec is read back through the contract, whose bounds may be tighter than the checks it
passed when it was stored: :func:`spec_problem` says what no longer fits, and reads show such
fields at their defaults (:func:`read_spec`) so that one old row never breaks a list.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, overload

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from contracts.training import (
    MAX_HISTORY,
    MAX_LOG_LINES,
    EpochRecord,
    GateVerdict,
    LogLine,
    TrainingJob,
    TrainingJobSpec,
)

__all__ = [
    "append_logs",
    "beat",
    "cancel",
    "claim",
    "finish",
    "get",
    "insert",
    "job_logs",
    "jobs",
    "logs",
    "model_of",
    "page",
    "policies",
    "progress",
    "read_spec",
    "retrainings",
    "spec_problem",
    "stale_or_queued",
]

metadata = sa.MetaData()

jobs = sa.Table(
    "training_jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("epochs", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("history", sa.JSON, nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("verdict", sa.JSON, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Index("ix_training_jobs_status", jobs.c.status, jobs.c.heartbeat_at)
sa.Index("ix_training_jobs_created", jobs.c.created_at)

policies = sa.Table(
    "training_retraining_policies",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("last_scheduled_at", sa.Float, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

retrainings = sa.Table(
    "training_retrainings",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("trigger", sa.String(256), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("rollout_id", sa.String(64), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("log", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Index("ix_training_retrainings_model", retrainings.c.model, retrainings.c.created_at)
"""One row per retraining saga, unique by its trigger (see ``retraining.py``)."""

logs = sa.Table(
    "training_job_logs",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("line", sa.Text, nullable=False),
)
"""A job's log lines, numbered from 1 per job; only the latest :data:`MAX_LOG_LINES` stay."""


@overload
def _when(seconds: float) -> datetime: ...
@overload
def _when(seconds: float | None) -> datetime | None: ...
def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def read_spec(raw: Any) -> TrainingJobSpec:
    """A stored job spec; a field that breaks today's bounds reads as its default."""
    for _ in range(32):  # each round drops one field; a spec has far fewer bounded ones
        try:
            return msgspec.convert(raw, TrainingJobSpec)
        except msgspec.ValidationError as exc:
            raw = _without(raw, str(exc))
            if raw is None:
                raise
    return msgspec.convert(raw, TrainingJobSpec)


def _without(raw: Any, problem: str) -> Any:
    """``raw`` without the field ``problem`` (msgspec's message) points at, or ``None``."""
    _, _, where = problem.rpartition(" - at `$.")
    path = where.rstrip("`").split(".") if where else []
    if not raw or not path or not all(part.isidentifier() for part in path):
        return None
    trimmed = copy.deepcopy(raw)
    node = trimmed
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or path[-1] not in node:
        return None
    del node[path[-1]]
    return trimmed


def spec_problem(conn: Connection, job_id: str) -> str | None:
    """What in job ``job_id``'s stored spec breaks the contract, or ``None`` when it fits."""
    raw = conn.execute(sa.select(jobs.c.spec).where(jobs.c.id == job_id)).scalar()
    try:
        msgspec.convert(raw, TrainingJobSpec)
    except msgspec.ValidationError as exc:
        return f"its stored spec is not valid: {exc}"
    return None


def model_of(conn: Connection, job_id: str) -> str | None:
    """The model job ``job_id`` trains, read without decoding its spec."""
    found: str | None = conn.execute(sa.select(jobs.c.model).where(jobs.c.id == job_id)).scalar()
    return found


def _job(row: Any, *, history: bool = False) -> TrainingJob:
    return TrainingJob(
        id=row.id,
        spec=read_spec(row.spec),
        status=row.status,
        attempt=row.attempt,
        epoch=row.epoch,
        epochs=row.epochs,
        metrics=dict(row.metrics or {}),
        heartbeat_at=_when(row.heartbeat_at),
        error=row.error,
        version=row.version,
        verdict=None if row.verdict is None else msgspec.convert(row.verdict, GateVerdict),
        cancel_requested=bool(row.cancel_requested),
        history=msgspec.convert(row.history or [], list[EpochRecord]) if history else [],
        created_at=_when(row.created_at),
        updated_at=_when(row.updated_at),
    )


def insert(conn: Connection, job_id: str, spec: TrainingJobSpec, now: float) -> TrainingJob:
    """Store a new queued job."""
    conn.execute(
        jobs.insert().values(
            id=job_id,
            model=spec.model,
            spec=msgspec.to_builtins(spec),
            status="queued",
            attempt=0,
            max_attempts=spec.max_attempts,
            epoch=0,
            epochs=0,
            metrics={},
            cancel_requested=False,
            created_at=now,
            updated_at=now,
        )
    )
    found = get(conn, job_id)
    assert found is not None
    return found


def get(conn: Connection, job_id: str) -> TrainingJob | None:
    """The job ``job_id``, or ``None``."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    return None if row is None else _job(row, history=True)


def page(
    conn: Connection, limit: int, cursor: tuple[float, str] | None, status: str | None
) -> tuple[list[TrainingJob], tuple[float, str] | None]:
    """Up to ``limit`` jobs, newest first, after ``cursor`` (``created_at``, ``id``)."""
    listed = [c for c in jobs.c if c.name != "history"]  # lists leave the curves out
    query = sa.select(*listed).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if cursor is not None:
        created, last = cursor
        query = query.where(
            sa.or_(
                jobs.c.created_at < created,
                sa.and_(jobs.c.created_at == created, jobs.c.id < last),
            )
        )
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return [_job(r) for r in rows], ((rows[-1].created_at, rows[-1].id) if more else None)


def claim(conn: Connection, job_id: str, owner: str, now: float, stale_before: float) -> str:
    """Take the job for a run. Answers ``claimed``, ``exhausted`` (a stale job out of
    attempts: now failed), or ``busy`` (running elsewhere, finished, or cancelled)."""
    takeable = sa.or_(
        jobs.c.status == "queued",
        sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < stale_before),
    )
    result = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, takeable, jobs.c.attempt < jobs.c.max_attempts)
        .values(
            status="running",
            attempt=jobs.c.attempt + 1,
            owner=owner,
            heartbeat_at=now,
            epoch=0,
            history=[],
            updated_at=now,
        )
    )
    if result.rowcount == 1:
        return "claimed"
    result = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, takeable, jobs.c.attempt >= jobs.c.max_attempts)
        .values(
            status="failed",
            owner=None,
            error="its worker stopped (no heartbeat) on every attempt",
            updated_at=now,
        )
    )
    return "exhausted" if result.rowcount == 1 else "busy"


def beat(conn: Connection, job_id: str, owner: str, now: float) -> bool | None:
    """Refresh the run's heartbeat. Answers whether cancellation was asked for, or ``None``
    when this run no longer holds the job."""
    result = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.owner == owner, jobs.c.status == "running")
        .values(heartbeat_at=now)
    )
    if result.rowcount != 1:
        return None
    flag = conn.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
    return bool(flag)


def progress(
    conn: Connection,
    job_id: str,
    owner: str,
    now: float,
    *,
    epoch: int,
    epochs: int,
    metrics: dict[str, float],
    earlier: Sequence[tuple[int, dict[str, float]]] = (),
) -> bool | None:
    """Record an epoch in the job's state and history (and a heartbeat), with the ``earlier``
    epochs ``(epoch, metrics)`` that were not recorded one by one; answers like :func:`beat`."""
    held = (jobs.c.id == job_id, jobs.c.owner == owner, jobs.c.status == "running")
    before = conn.execute(sa.select(jobs.c.history).where(*held)).first()
    if before is None:
        return None
    added = {e: m for e, m in [*earlier, (epoch, metrics)]}
    history = [h for h in (before.history or []) if h.get("epoch") not in added]
    history += [{"epoch": e, "metrics": m} for e, m in sorted(added.items())]
    history = history[-MAX_HISTORY:]
    result = conn.execute(
        jobs.update()
        .where(*held)
        .values(
            epoch=epoch,
            epochs=epochs,
            metrics=metrics,
            history=history,
            heartbeat_at=now,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        return None
    flag = conn.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
    return bool(flag)


def finish(
    conn: Connection,
    job_id: str,
    owner: str | None,
    now: float,
    *,
    status: str,
    error: str | None = None,
    version: int | None = None,
    metrics: dict[str, float] | None = None,
    verdict: GateVerdict | None = None,
) -> bool:
    """Give the job its one outcome; ``False`` when this run does not hold it (or, with
    ``owner=None``, when the job is not queued)."""
    values: dict[str, Any] = {"status": status, "error": error, "updated_at": now, "owner": None}
    if version is not None:
        values["version"] = version
    if metrics is not None:
        values["metrics"] = metrics
    if verdict is not None:
        values["verdict"] = msgspec.to_builtins(verdict)
    query = jobs.update().where(jobs.c.id == job_id)
    if owner is None:
        query = query.where(jobs.c.status == "queued")
    else:
        query = query.where(jobs.c.owner == owner, jobs.c.status == "running")
    return conn.execute(query.values(**values)).rowcount == 1


def cancel(conn: Connection, job_id: str, now: float) -> None:
    """Flag a running job for cancellation (a queued one is finished by the caller)."""
    conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == "running")
        .values(cancel_requested=True, updated_at=now)
    )


def stale_or_queued(conn: Connection, stale_before: float, *, queued: bool) -> list[str]:
    """Ids of running jobs whose heartbeat is older than ``stale_before`` (and queued ones)."""
    condition = sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < stale_before)
    if queued:
        condition = sa.or_(condition, jobs.c.status == "queued")
    query = sa.select(jobs.c.id).where(condition).order_by(jobs.c.created_at)
    return list(conn.execute(query).scalars())


def append_logs(
    conn: Connection,
    job_id: str,
    owner: str,
    attempt: int,
    lines: Sequence[tuple[float, str]],
) -> bool:
    """Add ``(at, line)`` lines to the job's log while run ``owner`` holds it, and let go of
    lines beyond the latest :data:`MAX_LOG_LINES`; ``False`` when the run no longer holds it."""
    held = conn.execute(
        sa.select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.owner == owner)
    ).first()
    if held is None:
        return False
    if not lines:
        return True
    last = conn.execute(sa.select(sa.func.max(logs.c.seq)).where(logs.c.job_id == job_id)).scalar()
    first = (last or 0) + 1
    kept = list(lines)[-MAX_LOG_LINES:]
    first += len(lines) - len(kept)
    conn.execute(
        logs.insert(),
        [
            {"job_id": job_id, "seq": first + i, "attempt": attempt, "at": at, "line": line}
            for i, (at, line) in enumerate(kept)
        ],
    )
    newest = first + len(kept) - 1
    conn.execute(logs.delete().where(logs.c.job_id == job_id, logs.c.seq <= newest - MAX_LOG_LINES))
    return True


def job_logs(conn: Connection, job_id: str, limit: int) -> tuple[list[LogLine], int] | None:
    """The job's newest ``limit`` log lines, oldest first, and how many lines came before them
    (``None`` when there is no such job)."""
    if conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
        return None
    newest = conn.execute(
        sa.select(logs.c.seq, logs.c.attempt, logs.c.at, logs.c.line)
        .where(logs.c.job_id == job_id)
        .order_by(logs.c.seq.desc())
        .limit(limit)
    ).all()
    rows = list(reversed(newest))
    lines = [LogLine(at=_when(r.at), attempt=r.attempt, line=r.line) for r in rows]
    return lines, (rows[0].seq - 1 if rows else 0)
