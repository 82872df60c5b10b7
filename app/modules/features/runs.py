"""Queries over materialization runs and watermarks (tables in :mod:`.store`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.modules.features.keys import from_micros
from app.modules.features.store import materializations, upsert, watermarks
from contracts.features import Materialization

__all__ = [
    "advance_watermark",
    "claim",
    "finish",
    "get",
    "insert",
    "last_runs",
    "progress",
    "unfinished",
    "watermark",
]

_FINISHED = ("succeeded", "failed")


def insert(
    conn: Connection, run_id: str, view: str, window: tuple[int | None, int | None], chunk: int
) -> None:
    """Queue a run of ``view`` over ``window`` (micros; ``None`` = the watermark, now)."""
    conn.execute(
        sa.insert(materializations).values(
            id=run_id,
            view=view,
            status="queued",
            start_ts=window[0],
            end_ts=window[1],
            chunk_rows=chunk,
            rows_done=0,
            rows_written=0,
            created_at=datetime.now(UTC),
        )
    )


def get(conn: Connection, run_id: str) -> Materialization | None:
    """The run ``run_id``, or ``None``."""
    row = conn.execute(sa.select(materializations).where(materializations.c.id == run_id)).first()
    return None if row is None else _run(row)


def row(conn: Connection, run_id: str) -> Any:
    """The stored row of ``run_id`` (``None`` if there is none)."""
    query = sa.select(materializations).where(materializations.c.id == run_id)
    return conn.execute(query).first()


def claim(conn: Connection, run_id: str, end_ts: int) -> bool:
    """Start (or, redelivered, restart) an unfinished run from its first row; ``False`` when it
    already has an outcome."""
    table = materializations
    done = conn.execute(
        sa.update(table)
        .where(table.c.id == run_id, table.c.status.not_in(_FINISHED))
        .values(
            status="running",
            rows_done=0,
            rows_written=0,
            rows_total=None,
            end_ts=end_ts,
            error=None,
            started_at=datetime.now(UTC),
        )
    )
    return done.rowcount == 1


def progress(
    conn: Connection, run_id: str, *, done: int, total: int | None, written: int = 0
) -> None:
    """Record ``done`` rows handled of ``total``, ``written`` of them stored."""
    conn.execute(
        sa.update(materializations)
        .where(materializations.c.id == run_id)
        .values(rows_done=done, rows_total=total, rows_written=written)
    )


def finish(
    conn: Connection, run_id: str, status: str, error: str | None, mark: int | None = None
) -> None:
    """Give the run its outcome (and the view's watermark after it)."""
    conn.execute(
        sa.update(materializations)
        .where(materializations.c.id == run_id, materializations.c.status.not_in(_FINISHED))
        .values(status=status, error=error, watermark_ts=mark, finished_at=datetime.now(UTC))
    )


def watermark(conn: Connection, view: str) -> int | None:
    """The view's watermark (micros), or ``None`` before its first complete run."""
    query = sa.select(watermarks.c.watermark_ts).where(watermarks.c.view == view)
    found = conn.execute(query).scalar()
    return None if found is None else int(found)


def advance_watermark(conn: Connection, view: str, mark: int) -> int:
    """Move the view's watermark forward to ``mark`` (never back); answer the watermark."""
    insert = upsert(conn, watermarks)
    conn.execute(
        insert.values(
            view=view, watermark_ts=mark, updated_at=datetime.now(UTC)
        ).on_conflict_do_update(
            index_elements=["view"],
            set_={
                "watermark_ts": insert.excluded.watermark_ts,
                "updated_at": insert.excluded.updated_at,
            },
            where=insert.excluded.watermark_ts > watermarks.c.watermark_ts,
        )
    )
    return watermark(conn, view) or mark


def unfinished(conn: Connection) -> list[str]:
    """Runs without an outcome, oldest first."""
    table = materializations
    query = sa.select(table.c.id).where(table.c.status.not_in(_FINISHED))
    return list(conn.execute(query.order_by(table.c.created_at)).scalars())


def last_runs(conn: Connection) -> dict[str, tuple[str, datetime]]:
    """Per view: the status of its newest run and when it finished (or was queued)."""
    table = materializations
    newest = (
        sa.select(table.c.view, sa.func.max(table.c.created_at).label("at"))
        .group_by(table.c.view)
        .subquery()
    )
    query = sa.select(table.c.view, table.c.status, table.c.created_at, table.c.finished_at).join(
        newest, sa.and_(table.c.view == newest.c.view, table.c.created_at == newest.c.at)
    )
    return {
        view: (status, _utc(finished or created))
        for view, status, created, finished in conn.execute(query)
    }


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _run(found: Any) -> Materialization:
    started = _utc(found.started_at) if found.started_at else None
    finished = _utc(found.finished_at) if found.finished_at else None
    rate = None
    if started is not None and found.rows_done:
        seconds = ((finished or datetime.now(UTC)) - started).total_seconds()
        rate = found.rows_done / seconds if seconds > 0 else None
    percent = None
    if found.status == "succeeded":
        percent = 100.0
    elif found.rows_total:
        percent = min(100.0, 100.0 * found.rows_done / found.rows_total)
    return Materialization(
        id=found.id,
        view=found.view,
        status=found.status,
        start=None if found.start_ts is None else from_micros(found.start_ts),
        end=None if found.end_ts is None else from_micros(found.end_ts),
        rows_total=found.rows_total,
        rows_done=found.rows_done,
        rows_written=found.rows_written,
        percent=percent,
        rows_per_s=rate,
        error=found.error,
        watermark=None if found.watermark_ts is None else from_micros(found.watermark_ts),
        created_at=_utc(found.created_at),
        started_at=started,
        finished_at=finished,
    )
