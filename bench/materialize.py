"""How fast a feature view materializes from a Parquet file.

``python -m bench.materialize [--quick]`` writes one Parquet file (1,000,000 rows of 10 float
features over 100,000 entities, events spread over a month, about 1 % of rows sharing their
entity's event time with another row) and measures, in this process:

1. **the floor**: pyarrow reading the same file in the same chunks (nothing is stored);
2. ``materialize`` of a view whose source is that file, from the request until the run has
   succeeded, on embedded defaults (SQLite offline and online) and, when reachable, on
   PostgreSQL (offline) + Redis (online);
3. **the baseline**: pushing the same rows through the API (``POST /v1/features/views/{name}/
   rows``, 10,000 rows a request, bodies encoded beforehand) into another view on the same
   stores; on a sample of ``--push-rows`` rows, as rows per second.

After each materialization the stores are checked against an in-memory reference computed from
the file with numpy (``bench/_materialize_checks.py``): every entity's online values against its
latest row, and a point-in-time read of ``--check-rows`` entity rows against the row each should
find. The results give the rows compared and the mismatches; any mismatch makes the run exit 1.

Results go to ``bench/results/materialize.json`` and ``.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import uvloop

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.features.settings import FeaturesSettings
from bench._materialize_checks import Check, Reference, check_historical, check_online
from bench._report import Machine, machine, save
from contracts.features import (
    Feature,
    FeatureSource,
    GetMaterialization,
    Materialization,
    Materialize,
    PutFeatureView,
)

__all__ = ["main"]

RESULTS = Path(__file__).with_name("results")
FEATURES = 10
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MONTH_S = 30 * 86_400
PUSH_BATCH = 10_000
TIED_SHARE = 0.01
"""The share of rows given the event time of their entity's previous row (a tie to break)."""
CHECK_BATCH = 1_000
_QUICK = {"rows": 20_000, "entities": 2_000, "push_rows": 10_000, "check_rows": 2_000}
_LIBRARIES = ("pyarrow", "sqlalchemy", "psycopg", "redis", "msgspec")


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One way of loading the file's rows, on one set of stores."""

    method: str
    stores: str
    rows: int
    seconds: float
    rows_per_s: float
    vs_floor: float | None
    """``rows_per_s`` as a share of pyarrow's reading rate (the floor)."""


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one run measured."""

    machine: Machine
    setup: dict[str, Any]
    rows: list[Row]
    checks: list[Check] = []
    """What the stores answered after materializing, against the reference."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: measure, print the report and write the results."""
    args = _parser().parse_args(argv)
    if args.quick:
        vars(args).update(_QUICK)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
        root = Path(tmp)
        path = _write_file(root / "data" / "features.parquet", args.rows, args.entities)
        floor = _floor(path, args.chunk_rows)
        reference = Reference.from_file(path, "user_id", [f"f{j}" for j in range(FEATURES)])
        rows, checks = [floor], list[Check]()
        measured = uvloop.run(_stores(args, root, reference, "embedded (SQLite)", {}, None))
        rows, checks = rows + measured[0], checks + measured[1]
        with _postgres(args.postgres_url) as url:
            if url is not None and _redis_up(args.redis_url):
                stores = {"features": url}
                measured = uvloop.run(
                    _stores(args, root, reference, "PostgreSQL + Redis", stores, args.redis_url)
                )
                rows, checks = rows + measured[0], checks + measured[1]
    rows = [msgspec.structs.replace(r, vs_floor=r.rows_per_s / floor.rows_per_s) for r in rows]
    found = machine(load_at_start, _LIBRARIES, absent="-")
    setup = {k: v for k, v in vars(args).items() if k not in ("output_dir", "postgres_url")}
    report = Report(
        machine=found,
        setup={
            **setup,
            "features": FEATURES,
            "push_batch": PUSH_BATCH,
            "tied_rows": reference.tied_rows,
            "check_batch": CHECK_BATCH,
        },
        rows=rows,
        checks=checks,
    )
    text = markdown(report)
    save(report, args.output_dir, "materialize", text)
    print(text)
    return 1 if any(c.mismatches for c in checks) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.materialize",
        description="Materializing a Parquet source against reading it and pushing its rows.",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the file")
    parser.add_argument("--entities", type=int, default=100_000, help="distinct entities")
    parser.add_argument("--chunk-rows", type=int, default=10_000, help="rows per chunk")
    parser.add_argument("--push-rows", type=int, default=100_000, help="rows pushed (sample)")
    parser.add_argument(
        "--check-rows", type=int, default=10_000, help="entity rows read point-in-time (check)"
    )
    parser.add_argument("--quick", action="store_true", help=f"a smaller run: {_QUICK}")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("QUARRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"),
        help="a database to create (and drop) the benchmark's database from; '' skips it",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="where results go")
    return parser


def _write_file(path: Path, rows: int, entities: int) -> Path:
    rng = np.random.default_rng(7)
    seconds = rng.integers(0, MONTH_S, size=rows)
    user_id = rng.permutation(np.arange(rows) % entities).astype(np.int64)
    by_entity = np.argsort(user_id, kind="stable")
    same = user_id[by_entity[1:]] == user_id[by_entity[:-1]]
    tied = np.flatnonzero(same & (rng.random(rows - 1) < TIED_SHARE))
    seconds[by_entity[tied + 1]] = seconds[by_entity[tied]]
    columns: dict[str, Any] = {
        "user_id": user_id,
        "event_timestamp": pa.array(
            (int(T0.timestamp()) + seconds) * 1_000_000, pa.timestamp("us", tz="UTC")
        ),
    }
    for j in range(FEATURES):
        columns[f"f{j}"] = rng.normal(size=rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=100_000)
    return path


def _floor(path: Path, chunk_rows: int) -> Row:
    started = time.perf_counter()
    count = sum(b.num_rows for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows))
    seconds = time.perf_counter() - started
    return Row(
        method="pyarrow reads the file (floor)",
        stores="-",
        rows=count,
        seconds=seconds,
        rows_per_s=count / seconds,
        vs_floor=1.0,
    )


def _view(name: str, source: FeatureSource | None) -> PutFeatureView:
    features = [Feature(name=f"f{j}", dtype="float") for j in range(FEATURES)]
    return PutFeatureView(name=name, entities=["user_id"], features=features, source=source)


async def _stores(
    args: argparse.Namespace,
    root: Path,
    reference: Reference,
    label: str,
    urls: dict[str, str],
    redis: str | None,
) -> tuple[list[Row], list[Check]]:
    prefix = f"quarry-bench-{uuid.uuid4().hex[:8]}:"
    config = FeaturesSettings(online_store_url=redis, schedule_check_s=3600)
    settings = Settings(
        data_dir=root / "data",
        modules=("features",),
        database_urls=urls,
        redis_prefix=prefix,
        log_level="WARNING",
    ).with_module(config)
    platform = Platform(settings)
    await platform.start()
    try:
        features = platform.client("features", caller="bench")
        source = FeatureSource(format="parquet", path="features.parquet")
        await features.put_view(_view("sourced", source))
        await features.put_view(_view("pushed", None))
        started = time.perf_counter()
        run = await features.materialize(Materialize(view="sourced", chunk_rows=args.chunk_rows))
        run = await _finished(features, run)
        seconds = time.perf_counter() - started
        if run.status != "succeeded":
            raise RuntimeError(f"materialization failed: {run.error}")
        checks = [
            await check_online(features, "sourced", reference, label, CHECK_BATCH),
            await check_historical(features, "sourced", reference, label, args.check_rows, 11),
        ]
        pushed, push_s = await _push(platform, root / "data" / "features.parquet", args.push_rows)
    finally:
        await platform.stop()
        if redis is not None:
            _drop_keys(redis, prefix)
    measured = [
        Row(
            method="materialize",
            stores=label,
            rows=run.rows_written,
            seconds=seconds,
            rows_per_s=run.rows_written / seconds,
            vs_floor=None,
        ),
        Row(
            method=f"push through the API ({PUSH_BATCH:,} rows a request)",
            stores=label,
            rows=pushed,
            seconds=push_s,
            rows_per_s=pushed / push_s,
            vs_floor=None,
        ),
    ]
    return measured, checks


async def _finished(features: Any, run: Materialization) -> Materialization:
    while run.status in ("queued", "running"):
        await asyncio.sleep(0.1)
        run = await features.get_materialization(GetMaterialization(id=run.id))
    return run


async def _push(platform: Platform, path: Path, rows: int) -> tuple[int, float]:
    """Push the file's first ``rows`` rows over HTTP (in-process ASGI); answer rows, seconds."""
    table = pq.read_table(path).slice(0, rows)
    records = table.to_pylist()
    for record in records:
        record["event_timestamp"] = record["event_timestamp"].isoformat()
    bodies = [
        msgspec.json.encode({"rows": records[i : i + PUSH_BATCH]})
        for i in range(0, len(records), PUSH_BATCH)
    ]
    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        started = time.perf_counter()
        for body in bodies:
            answer = await client.post(
                "/v1/features/views/pushed/rows", content=body, headers=headers, timeout=600
            )
            answer.raise_for_status()
        return len(records), time.perf_counter() - started


@contextmanager
def _postgres(admin_url: str) -> Iterator[str | None]:
    if not admin_url:
        yield None
        return
    try:
        conn = psycopg.connect(admin_url, autocommit=True, connect_timeout=2)
    except psycopg.OperationalError:
        yield None
        return
    name = f"quarry_bench_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _drop_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=10_000))
        for i in range(0, len(keys), 10_000):
            client.delete(*keys[i : i + 10_000])
    finally:
        client.close()


def markdown(report: Report) -> str:
    """The report as markdown: one row per method and stores, then the machine."""
    setup = report.setup
    lines = [
        "# Materializing a Parquet source",
        "",
        f"{setup['rows']:,} rows of {FEATURES} float features over {setup['entities']:,}"
        f" entities, {setup['chunk_rows']:,} rows a chunk; pushes timed on"
        f" {setup['push_rows']:,} rows.",
        "",
        "| method | stores | rows | seconds | rows/s | share of the floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        share = "-" if row.vs_floor is None else f"{row.vs_floor:.3f}"
        lines.append(
            f"| {row.method} | {row.stores} | {row.rows:,} | {row.seconds:.1f} |"
            f" {row.rows_per_s:,.0f} | {share} |"
        )
    lines += _check_lines(report)
    m = report.machine
    lines += [
        "",
        f"Machine: {m.cpu_model}, {m.cores} cores, Python {m.python}, {m.platform};"
        f" load {m.load_1m[0]:.1f} -> {m.load_1m[1]:.1f}; {m.date}.",
        "",
    ]
    return "\n".join(lines)


def _check_lines(report: Report) -> list[str]:
    if not report.checks:
        return []
    setup = report.setup
    lines = [
        "",
        "After each materialization, the stores' answers against a reference computed from the"
        f" file with numpy ({setup['tied_rows']:,} rows tie with a later row of their entity and"
        " event time: the later one wins). Online: every entity read through `get_online`,"
        f" {setup['check_batch']:,} a call, values and event time. Historical: `get_historical`"
        " for a random sample of entity rows at an event, between two, before the first and after"
        " the last.",
        "",
        "| check | stores | rows compared | mismatches | seconds |",
        "|---|---|---:|---:|---:|",
    ]
    for check in report.checks:
        lines.append(
            f"| {check.check} | {check.stores} | {check.rows:,} | {check.mismatches:,} |"
            f" {check.seconds:.1f} |"
        )
    for check in report.checks:
        lines += [f"- {check.stores}, {check.check}: {e}" for e in check.examples]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
