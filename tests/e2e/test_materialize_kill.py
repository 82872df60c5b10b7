"""A `quarry materialize` process killed (SIGKILL) after it stored some chunks, then run again,
leaves the same stores as one clean run: every source row offline once, the latest row per
entity online, and no watermark past rows that were not stored. On embedded defaults and on
PostgreSQL + Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

import app
from contracts.features import (
    Feature,
    FeatureSource,
    GetMaterialization,
    GetOnlineFeatures,
    Materialize,
    PutFeatureView,
)
from tests.conftest import REDIS_URL, postgres_schema
from tests.fakes.server import QUARRY

pytestmark = pytest.mark.slow

ROWS, ENTITIES, CHUNK = 12_000, 1_200, 300
T0_S = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
FEATURES = [Feature(name="clicks", dtype="int"), Feature(name="ctr", dtype="float")]


def source_table() -> pa.Table:
    """Rows in no order, one event per (entity, minute): every row is its own offline row."""
    rng = np.random.default_rng(16)
    minutes = rng.permutation(ROWS)
    return pa.table(
        {
            "user_id": rng.integers(0, ENTITIES, ROWS),
            "event_timestamp": pa.array(
                (T0_S + minutes * 60) * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
            "clicks": rng.integers(0, 1_000, ROWS),
            "ctr": rng.random(ROWS),
        }
    )


def newest_per_user(table: pa.Table) -> dict[int, tuple[int, float]]:
    found: dict[int, tuple[Any, int, float]] = {}
    for row in table.to_pylist():
        kept = found.get(row["user_id"])
        if kept is None or row["event_timestamp"] > kept[0]:
            found[row["user_id"]] = (row["event_timestamp"], row["clicks"], row["ctr"])
    return {user: (clicks, ctr) for user, (_, clicks, ctr) in found.items()}


@pytest.fixture(params=["sqlite", "postgres_redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[dict[str, str]]]:
    """Two isolated sets of stores (environment variables), each with its data directory."""
    envs = [
        {"QUARRY_DATA_DIR": str(tmp_path / name), "QUARRY_MODULES": "features"}
        for name in ("killed", "clean")
    ]
    for env in envs:
        Path(env["QUARRY_DATA_DIR"]).mkdir()
    if request.param == "sqlite":
        yield envs
        return
    database = str(request.getfixturevalue("postgres_database"))
    namespace = str(request.getfixturevalue("redis_namespace"))
    with ExitStack() as schemas:  # each dropped at the end
        for env, name in zip(envs, ("killed", "clean"), strict=True):
            env |= {
                "QUARRY_FEATURES_DATABASE_URL": schemas.enter_context(postgres_schema(database)),
                "QUARRY_ONLINE_STORE_URL": REDIS_URL,
                "QUARRY_REDIS_PREFIX": f"{namespace}-{name}:",
            }
        yield envs


@contextmanager
def connected(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``app.connect_sync()`` on the stores of ``env``."""
    with monkeypatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        with app.connect_sync() as q:
            yield q


def declare(q: Any, env: dict[str, str]) -> None:
    """The source file in the data directory and a view reading it."""
    pq.write_table(source_table(), Path(env["QUARRY_DATA_DIR"]) / "users.parquet")
    q.features.put_view(
        PutFeatureView(
            name="users",
            entities=["user_id"],
            features=FEATURES,
            source=FeatureSource(format="parquet", path="users.parquet"),
        )
    )


@pytest.fixture
def database() -> Iterator[Callable[[dict[str, str]], sa.Engine]]:
    """Engines on the features database of a set of stores (disposed at the end)."""
    engines: list[sa.Engine] = []

    def engine(env: dict[str, str]) -> sa.Engine:
        url = env.get("QUARRY_FEATURES_DATABASE_URL")
        if url is None:
            url = f"sqlite:///{env['QUARRY_DATA_DIR']}/features.db"
        engines.append(sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)))
        return engines[-1]

    yield engine
    for made in engines:
        made.dispose()


def run_state(engine: sa.Engine) -> tuple[str, int, int | None] | None:
    """The one run's status, rows done and rows total (``None`` before it is stored)."""
    query = "SELECT status, rows_done, rows_total FROM features_materializations"
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql(query).first()
    except sa.exc.DBAPIError:  # SQLite is busy: ask again
        return None
    return None if found is None else (found[0], found[1], found[2])


def stored(engine: sa.Engine) -> tuple[list[tuple[Any, ...]], Any]:
    """Every offline row (key, time, values as text) and the view's watermark."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            'SELECT entity_key, event_ts, CAST("values" AS TEXT) FROM features_rows'
        ).all()
        mark = conn.exec_driver_sql("SELECT watermark_ts FROM features_watermarks").scalar()
    return sorted(tuple(r) for r in rows), mark


def online(q: Any) -> list[list[Any]]:
    answer = q.features.get_online(
        GetOnlineFeatures(
            features=["users:clicks", "users:ctr"], entities={"user_id": list(range(ENTITIES))}
        )
    )
    return [column.values for column in answer.results[1:]]


def materialize_command(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    command = [str(QUARRY), "materialize", "users", "--chunk-rows", str(CHUNK), "--json"]
    return command, {**os.environ, "QUARRY_LOG_LEVEL": "WARNING", **env}


@pytest.mark.timeout(180)
def test_a_killed_run_then_a_rerun_ends_as_one_clean_run(
    stores: list[dict[str, str]],
    database: Callable[[dict[str, str]], sa.Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    killed, clean = stores
    with connected(killed, monkeypatch) as q:
        declare(q, killed)
    engine = database(killed)
    command, env = materialize_command(killed)

    log = Path(killed["QUARRY_DATA_DIR"]) / "killed.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        state = run_state(engine)
        while process.poll() is None and (state is None or state[1] < CHUNK):
            time.sleep(0.01)  # polls the stored progress, waiting for a first chunk
            state = run_state(engine)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    status, done, total = run_state(engine) or ("missing", 0, None)
    partial, mark = stored(engine)
    assert (status, total) == ("running", ROWS)  # killed mid-run: no outcome
    assert CHUNK <= done < ROWS
    assert CHUNK <= len(partial) < ROWS  # some chunks stored, not all
    assert mark is None  # the watermark never passes rows that were not stored

    rerun = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    with connected(clean, monkeypatch) as q:  # the clean run, in this process
        declare(q, clean)
        run = q.features.materialize(Materialize(view="users", chunk_rows=CHUNK))
        while run.status in ("queued", "running"):
            time.sleep(0.05)
            run = q.features.get_materialization(GetMaterialization(id=run.id))
        clean_online = online(q)
    with connected(killed, monkeypatch) as q:
        killed_online = online(q)
    assert run.status == "succeeded", run.error

    after, after_mark = stored(engine)
    reference, reference_mark = stored(database(clean))
    assert len(after) == len(reference) == ROWS  # every row once: no duplicates
    assert after == reference
    assert after_mark is not None
    assert reference_mark is not None
    newest = newest_per_user(source_table())
    users = list(range(ENTITIES))
    expected = [
        [newest[u][0] if u in newest else None for u in users],
        [newest[u][1] if u in newest else None for u in users],
    ]
    assert killed_online == clean_online == expected
