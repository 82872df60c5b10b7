"""The inference module's tables (its own MetaData, every name prefixed ``inference_``).

Every query is a small function taking a :class:`~sqlalchemy.engine.Connection`; the caller owns
the transaction. Rows become contract Structs here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from contracts.common import Tensor
from contracts.inference import BatchJob, Deployment, Rollout

__all__ = [
    "StoredRollout",
    "batch_chunks",
    "batch_jobs",
    "claim_chunk",
    "delete_deployment",
    "deployments",
    "due_rollouts",
    "finish_job",
    "get_deployment",
    "get_job",
    "get_rollout",
    "insert_job",
    "insert_rollout",
    "page_deployments",
    "page_rollouts",
    "put_deployment",
    "read_chunk",
    "result_offsets",
    "rollouts",
    "running_rollout",
    "start_job",
    "unfinished_jobs",
    "update_rollout",
]

metadata = sa.MetaData()

deployments = sa.Table(
    "inference_deployments",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _row(spec: Any, updated_at: datetime) -> Deployment:
    deployment = msgspec.convert(spec, Deployment)
    if updated_at.tzinfo is None:  # SQLite keeps no time zone: the column holds UTC
        updated_at = updated_at.replace(tzinfo=UTC)
    return msgspec.structs.replace(deployment, updated_at=updated_at)


def get_deployment(conn: Connection, name: str) -> Deployment | None:
    """The deployment called ``name``, or ``None``."""
    row = conn.execute(sa.select(deployments).where(deployments.c.name == name)).first()
    return None if row is None else _row(row.spec, row.updated_at)


def put_deployment(conn: Connection, deployment: Deployment, now: datetime) -> Deployment:
    """Create or replace a deployment; answers it as stored."""
    spec = msgspec.to_builtins(msgspec.structs.replace(deployment, updated_at=None))
    conn.execute(sa.delete(deployments).where(deployments.c.name == deployment.name))
    conn.execute(sa.insert(deployments).values(name=deployment.name, spec=spec, updated_at=now))
    return msgspec.structs.replace(deployment, updated_at=now)


def delete_deployment(conn: Connection, name: str) -> Deployment | None:
    """Delete a deployment; answers what was deleted, or ``None``."""
    found = get_deployment(conn, name)
    if found is not None:
        conn.execute(sa.delete(deployments).where(deployments.c.name == name))
    return found


def page_deployments(conn: Connection, *, after: str | None, limit: int) -> list[Deployment]:
    """Up to ``limit + 1`` deployments by name after ``after`` (the extra one says more follow)."""
    query = sa.select(deployments).order_by(deployments.c.name).limit(limit + 1)
    if after is not None:
        query = query.where(deployments.c.name > after)
    return [_row(r.spec, r.updated_at) for r in conn.execute(query)]


# --- batch jobs -------------------------------------------------------------------------------

batch_jobs = sa.Table(
    "inference_batch_jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(300), nullable=False),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("rows_done", sa.Integer, nullable=False),
    sa.Column("chunk_rows", sa.Integer, nullable=False),
    sa.Column("coerce", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

batch_chunks = sa.Table(
    "inference_batch_chunks",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("offset", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
"""Msgpack-encoded ``dict[str, Tensor]`` blobs: ``kind`` is ``input`` or ``output``; a job on
files also has one ``spec`` (what it reads and writes)."""

_TENSORS = msgspec.msgpack.Decoder(dict[str, Tensor])
_ENCODER = msgspec.msgpack.Encoder()
UNFINISHED = ("queued", "running")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _job(row: Any) -> BatchJob:
    return BatchJob(
        id=row.id,
        model=row.model,
        status=row.status,
        rows=row.rows,
        rows_done=row.rows_done,
        error=row.error,
        version=row.version,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def insert_job(
    conn: Connection,
    job: BatchJob,
    *,
    target: str,
    chunk_rows: int,
    coerce: bool,
    chunks: list[tuple[int, dict[str, Tensor]]],
) -> None:
    """Store a queued job and its input chunks (``(offset, inputs)`` pairs)."""
    conn.execute(
        sa.insert(batch_jobs).values(
            id=job.id,
            model=job.model,
            target=target,
            status=job.status,
            rows=job.rows,
            rows_done=0,
            chunk_rows=chunk_rows,
            coerce=coerce,
            version=job.version,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )
    )
    for offset, inputs in chunks:
        conn.execute(
            sa.insert(batch_chunks).values(
                job_id=job.id, kind="input", offset=offset, data=_ENCODER.encode(inputs)
            )
        )


def get_job(conn: Connection, job_id: str) -> tuple[BatchJob, Any] | None:
    """The job and its raw row (for ``target``, ``chunk_rows``, ``coerce``), or ``None``."""
    row = conn.execute(sa.select(batch_jobs).where(batch_jobs.c.id == job_id)).first()
    return None if row is None else (_job(row), row)


def unfinished_jobs(conn: Connection) -> list[str]:
    """Ids of the jobs still queued or running, oldest first."""
    query = (
        sa.select(batch_jobs.c.id)
        .where(batch_jobs.c.status.in_(UNFINISHED))
        .order_by(batch_jobs.c.created_at)
    )
    return [r.id for r in conn.execute(query)]


def start_job(conn: Connection, job_id: str, now: datetime) -> bool:
    """Mark an unfinished job running; ``False`` when it already has its outcome."""
    done = conn.execute(
        sa.update(batch_jobs)
        .where(batch_jobs.c.id == job_id, batch_jobs.c.status.in_(UNFINISHED))
        .values(status="running", updated_at=now)
    )
    return done.rowcount == 1


def read_chunk(conn: Connection, job_id: str, kind: str, offset: int) -> dict[str, Tensor] | None:
    """One stored chunk, or ``None``."""
    row = conn.execute(
        sa.select(batch_chunks.c.data).where(
            batch_chunks.c.job_id == job_id,
            batch_chunks.c.kind == kind,
            batch_chunks.c.offset == offset,
        )
    ).first()
    return None if row is None else _TENSORS.decode(row.data)


def result_offsets(conn: Connection, job_id: str) -> list[int]:
    """Offsets of a job's stored result chunks, in order."""
    query = (
        sa.select(batch_chunks.c.offset)
        .where(batch_chunks.c.job_id == job_id, batch_chunks.c.kind == "output")
        .order_by(batch_chunks.c.offset)
    )
    return [r.offset for r in conn.execute(query)]


def claim_chunk(
    conn: Connection,
    job_id: str,
    *,
    offset: int,
    rows: int,
    outputs: dict[str, Tensor],
    version: int,
    now: datetime,
) -> bool:
    """Record the outputs of the chunk at ``offset`` and advance ``rows_done`` past it.

    Only when ``rows_done`` is still ``offset`` and the job is running: a redelivered message
    never stores a chunk twice. Answers whether it did.
    """
    done = conn.execute(
        sa.update(batch_jobs)
        .where(
            batch_jobs.c.id == job_id,
            batch_jobs.c.status == "running",
            batch_jobs.c.rows_done == offset,
        )
        .values(rows_done=offset + rows, version=version, updated_at=now)
    )
    if done.rowcount != 1:
        return False
    conn.execute(
        sa.insert(batch_chunks).values(
            job_id=job_id, kind="output", offset=offset, data=_ENCODER.encode(outputs)
        )
    )
    return True


def finish_job(
    conn: Connection, job_id: str, status: str, error: str | None, now: datetime
) -> bool:
    """Give an unfinished job its one outcome; ``False`` when it already had one.

    A failed job's input chunks are deleted; a succeeded one's too (its results stay).
    """
    done = conn.execute(
        sa.update(batch_jobs)
        .where(batch_jobs.c.id == job_id, batch_jobs.c.status.in_(UNFINISHED))
        .values(status=status, error=error, updated_at=now)
    )
    if done.rowcount != 1:
        return False
    conn.execute(
        sa.delete(batch_chunks).where(
            batch_chunks.c.job_id == job_id, batch_chunks.c.kind == "input"
        )
    )
    return True


def insert_spec(conn: Connection, job_id: str, spec: bytes) -> None:
    """Store what a job on files reads and writes (a ``spec`` chunk, kept with its results)."""
    conn.execute(sa.insert(batch_chunks).values(job_id=job_id, kind="spec", offset=0, data=spec))


def read_spec(conn: Connection, job_id: str) -> bytes | None:
    """A job's stored ``spec`` chunk, or ``None`` for a job on inline inputs."""
    row = conn.execute(
        sa.select(batch_chunks.c.data).where(
            batch_chunks.c.job_id == job_id, batch_chunks.c.kind == "spec"
        )
    ).first()
    return None if row is None else bytes(row.data)


# --- rollouts ---------------------------------------------------------------------------------

rollouts = sa.Table(
    "inference_rollouts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("deployment", sa.String(128), nullable=False, index=True),
    sa.Column("running", sa.String(128), nullable=True, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("step_started_at", sa.Float, nullable=False),
    sa.Column("next_check_at", sa.Float, nullable=True, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
"""``body`` is the :class:`Rollout` (with its history); ``running`` holds the deployment's name
while the rollout runs, else ``NULL``: its unique constraint allows one running rollout per
deployment. ``revision`` grows with every change, so a change based on a stale read is refused."""


class StoredRollout(msgspec.Struct, frozen=True, kw_only=True):
    """A rollout as stored, with what only the stepper needs."""

    rollout: Rollout
    revision: int
    step_started_at: float


def _stored(row: Any) -> StoredRollout:
    return StoredRollout(
        rollout=msgspec.convert(row.body, Rollout),
        revision=row.revision,
        step_started_at=row.step_started_at,
    )


def _rollout_values(rollout: Rollout, step_started_at: float) -> dict[str, Any]:
    next_check = rollout.next_check_at
    return {
        "running": rollout.deployment if rollout.status == "running" else None,
        "status": rollout.status,
        "body": msgspec.to_builtins(rollout),
        "step_started_at": step_started_at,
        "next_check_at": None if next_check is None else next_check.timestamp(),
    }


def insert_rollout(conn: Connection, rollout: Rollout, step_started_at: float) -> None:
    """Store a new rollout (``IntegrityError`` while another of its deployment runs)."""
    conn.execute(
        sa.insert(rollouts).values(
            id=rollout.id,
            deployment=rollout.deployment,
            revision=0,
            created_at=rollout.created_at.timestamp(),
            **_rollout_values(rollout, step_started_at),
        )
    )


def update_rollout(
    conn: Connection, rollout: Rollout, *, revision: int, step_started_at: float
) -> bool:
    """Replace a rollout read at ``revision``; ``False`` when it changed since."""
    done = conn.execute(
        sa.update(rollouts)
        .where(rollouts.c.id == rollout.id, rollouts.c.revision == revision)
        .values(revision=revision + 1, **_rollout_values(rollout, step_started_at))
    )
    return done.rowcount == 1


def get_rollout(conn: Connection, rollout_id: str) -> StoredRollout | None:
    """A rollout by id, or ``None``."""
    row = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
    return None if row is None else _stored(row)


def running_rollout(conn: Connection, deployment: str) -> str | None:
    """The id of the deployment's running rollout, or ``None``."""
    query = sa.select(rollouts.c.id).where(rollouts.c.running == deployment)
    return conn.execute(query).scalar_one_or_none()


def due_rollouts(conn: Connection, now: float) -> list[str]:
    """Ids of the running rollouts whose next check is due, the most overdue first."""
    query = (
        sa.select(rollouts.c.id)
        .where(rollouts.c.status == "running", rollouts.c.next_check_at <= now)
        .order_by(rollouts.c.next_check_at)
    )
    return [r.id for r in conn.execute(query)]


def page_rollouts(
    conn: Connection, *, deployment: str | None, after: tuple[float, str] | None, limit: int
) -> list[Rollout]:
    """Up to ``limit + 1`` rollouts, newest first, after the ``(created_at, id)`` key ``after``."""
    query = (
        sa.select(rollouts)
        .order_by(rollouts.c.created_at.desc(), rollouts.c.id.desc())
        .limit(limit + 1)
    )
    if deployment is not None:
        query = query.where(rollouts.c.deployment == deployment)
    if after is not None:
        created, last = after
        query = query.where(
            sa.or_(
                rollouts.c.created_at < created,
                sa.and_(rollouts.c.created_at == created, rollouts.c.id < last),
            )
        )
    return [_stored(r).rollout for r in conn.execute(query)]
