"""How long the console's pages take with 100 models and 10,000 training jobs (and 20,000
predictions served through their deployments over the last hour, which the overview's sparklines
and a model's monitoring charts read), against the JSON API route that lists the same page
(**the baseline**).

Everything runs in this process through the whole HTTP app (``create_app``: middleware, auth,
the console's cookie check) over ``httpx.ASGITransport``, so the figures are the server's work per
page, without a network. Jobs are queued on a Redis broker (``--redis``) that no worker consumes,
so 10,000 of them stay ``queued`` and nothing trains; the Redis keys go at the end.

    .venv/bin/python -m bench.console_pages [--models 100] [--jobs 10000] [--records 20000]
        [--requests 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from bench._report import machine, save
from contracts.inference import Deployment, PredictionRecord, PutDeployment, Route
from contracts.monitoring import RecordPredictions
from contracts.registry import RegisterVersion, SetAlias
from contracts.training import Dataset, SubmitTrainingJob, TrainingJobSpec
from tests.fakes.models import linear_onnx

RESULTS = Path(__file__).parent / "results"
SPEC = TrainingJobSpec(
    trainer="mlp_regressor",
    model="bench",
    dataset=Dataset(rows=[{"a": 1.0, "y": 2.0}, {"a": 2.0, "y": 3.0}], features=["a"], label="y"),
)


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """One page: sequential requests, their p50 and p99 in milliseconds."""

    page: str
    path: str
    baseline: str | None
    requests: int
    p50_ms: float
    p99_ms: float
    bytes: int


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """What one run measured, and where."""

    models: int
    jobs: int
    records: int = 0
    pages: list[Page]
    machine: object


async def _fill(platform: Platform, models: int, jobs: int, records: int) -> None:
    registry = platform.client("registry", caller="bench")
    inference = platform.client("inference", caller="bench")
    training = platform.client("training", caller="bench")
    artifact = linear_onnx(seed=0)
    for i in range(models):
        name = f"model-{i:03d}"
        await registry.register_version(RegisterVersion(name=name, artifact=artifact))
        await registry.set_alias(SetAlias(name=name, alias="champion", version=1))
        route = Route(model=f"{name}:1", weight=1.0)
        await inference.put_deployment(
            PutDeployment(deployment=Deployment(name=f"{name}-live", routes=[route]))
        )
    await _traffic(platform, models, records)
    for start in range(0, jobs, 200):
        batch = range(start, min(start + 200, jobs))
        await asyncio.gather(*(training.submit_job(SubmitTrainingJob(spec=SPEC)) for _ in batch))


async def _traffic(platform: Platform, models: int, records: int) -> None:
    """``records`` predictions spread over the last hour and the deployments, one in fifty
    failed."""
    monitoring = platform.client("monitoring", caller="bench")
    now = datetime.now(UTC)
    for start in range(0, records, 2000):
        batch = [
            PredictionRecord(
                prediction_id=f"bench-{i}",
                model=f"model-{i % models:03d}",
                version=1,
                status="unavailable" if i % 50 == 0 else "ok",
                latency_s=0.002 + (i % 97) / 10_000,
                at=now - timedelta(seconds=3600 * i / records),
                deployment=f"model-{i % models:03d}-live",
            )
            for i in range(start, min(start + 2000, records))
        ]
        await monitoring.record_predictions(RecordPredictions(records=batch))


async def _time(http: httpx.AsyncClient, path: str, requests: int) -> tuple[float, float, int]:
    for _ in range(3):
        answer = await http.get(path)
        answer.raise_for_status()
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = await http.get(path)
        took.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    took.sort()
    return statistics.median(took), took[int(0.99 * (len(took) - 1))], len(answer.content)


async def run(models: int, jobs: int, records: int, requests: int, redis: str) -> Report:
    load = os.getloadavg()[0]
    prefix = f"bench-console-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data), broker_url=redis, redis_prefix=prefix)
        try:
            async with Platform(settings) as platform:
                await _fill(platform, models, jobs, records)
                app = create_app(platform, host="127.0.0.1")
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
                    cursor = (await http.get("/v1/training/jobs?limit=50")).json()["next_cursor"]
                    pages = [
                        ("models (API)", "/v1/registry/models?limit=50", None),
                        ("models", "/ui/models", "models (API)"),
                        ("jobs (API)", "/v1/training/jobs?limit=50", None),
                        ("jobs", "/ui/training", "jobs (API)"),
                        ("jobs, page 2", f"/ui/training?cursor={cursor}", "jobs (API)"),
                        ("deployments (API)", "/v1/inference/deployments?limit=50", None),
                        ("deployments", "/ui/deployments", "deployments (API)"),
                        ("overview", "/ui", None),
                        ("monitoring", "/ui/monitoring", None),
                        ("a model", f"/ui/models/model-{models // 2:03d}", None),
                        (
                            "a model's monitoring, 24h",
                            f"/ui/monitoring/model-{models // 2:03d}?window=24h",
                            None,
                        ),
                    ]
                    rows = []
                    for name, path, baseline in pages:
                        p50, p99, size = await _time(http, path, requests)
                        rows.append(
                            Page(
                                page=name,
                                path=_shown(path),
                                baseline=baseline,
                                requests=requests,
                                p50_ms=round(p50, 2),
                                p99_ms=round(p99, 2),
                                bytes=size,
                            )
                        )
        finally:
            import redis as redis_client

            client = redis_client.Redis.from_url(redis)
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
            client.close()
    return Report(models=models, jobs=jobs, records=records, pages=rows, machine=machine(load))


def _shown(path: str) -> str:
    """``path`` with an opaque cursor left out."""
    return path.split("?cursor=", maxsplit=1)[0] + ("?cursor=…" if "?cursor=" in path else "")


def markdown(report: Report) -> str:
    by_name = {p.page: p for p in report.pages}
    lines = [
        f"# Console pages with {report.models} models and {report.jobs:,} training jobs",
        "",
        f"{report.records:,} predictions served through the deployments over the last hour.",
        "",
        "Whole HTTP app in process (`httpx.ASGITransport`); the baseline of a console list is the",
        "API route listing the same page of the same contract.",
        "",
        "| page | path | p50 (ms) | p99 (ms) | p50 vs baseline | bytes |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for p in report.pages:
        versus = ""
        if p.baseline:
            versus = f"{p.p50_ms / by_name[p.baseline].p50_ms:.1f}x {p.baseline}"
        lines.append(
            f"| {p.page} | `{p.path}` | {p.p50_ms:.1f} | {p.p99_ms:.1f} | {versus} | {p.bytes:,} |"
        )
    return "\n".join([*lines, "", f"Machine: {msgspec.json.encode(report.machine).decode()}", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()
    report = asyncio.run(run(args.models, args.jobs, args.records, args.requests, args.redis))
    _, md_path = save(report, RESULTS, "console_pages", markdown(report))
    print(md_path.read_text())


if __name__ == "__main__":
    main()
