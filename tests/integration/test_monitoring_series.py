"""Traffic, errors and latency step by step (``get_series``), of a model, one version or a
deployment, in process and over a msgpack round trip."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.bootstrap import Platform
from app.kernel import calls
from app.kernel.codec import loopback
from app.kernel.settings import Settings
from app.modules.monitoring.series import series_of
from contracts.common import InvalidInput
from contracts.inference import PredictionRecord
from contracts.monitoring import GetSeries, MonitoringService, RecordPredictions

STEP_S = 60.0


def _record(
    at: float, latency_s: float, status: str = "ok", *, version: int = 1, deployment: str = "live"
) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=uuid.uuid4().hex,
        model="churn",
        version=version,
        status=status,
        latency_s=latency_s,
        at=datetime.fromtimestamp(at, tz=UTC),
        deployment=deployment,
    )


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    async with Platform(Settings(data_dir=tmp_path, modules=("registry", "monitoring"))) as p:
        yield p


async def test_a_series_counts_each_step_of_a_model_a_version_and_a_deployment(
    platform: Platform,
) -> None:
    direct: MonitoringService = platform.client("monitoring", caller="tests")
    now = time.time()
    # the newest step of a 5-step window: 4 answers and 2 failures; the oldest step: one answer
    newest = [_record(now - 30, s / 1000) for s in (10, 20, 30, 40)]
    newest += [_record(now - 20, 0.001, "unavailable"), _record(now - 10, 0.002, "invalid_input")]
    oldest = [_record(now - 5 * STEP_S + 5, 0.5, version=2, deployment="shadow")]
    await direct.record_predictions(RecordPredictions(records=newest + oldest))

    wire = loopback(MonitoringService, platform.client("monitoring"))
    remote = calls.bind(MonitoringService, wire, module="monitoring", caller="tests")
    for client in (direct, remote):
        found = await client.get_series(GetSeries(model="churn", window_s=5 * STEP_S, buckets=5))
        assert found.step_s == pytest.approx(STEP_S)
        assert [p.requests for p in found.points] == [1, 0, 0, 0, 6]
        last = found.points[-1]
        assert (last.errors, last.errors_by_code) == (2, {"unavailable": 1, "invalid_input": 1})
        assert last.error_rate == pytest.approx(2 / 6)
        assert last.qps == pytest.approx(6 / STEP_S)
        assert last.latency_p99_s == pytest.approx(0.04, rel=0.05)
        assert found.points[1].latency_p50_s is None  # no request in that step
        assert found.points[0].end == found.points[1].start

    version_two = await direct.get_series(
        GetSeries(model="churn", version=2, window_s=5 * STEP_S, buckets=5)
    )
    assert sum(p.requests for p in version_two.points) == 1
    live = await remote.get_series(GetSeries(deployment="live", window_s=5 * STEP_S, buckets=5))
    assert sum(p.requests for p in live.points) == 6
    assert live.model is None
    assert live.deployment == "live"


async def test_a_series_needs_a_model_or_a_deployment_within_bounds(platform: Platform) -> None:
    monitoring: MonitoringService = platform.client("monitoring", caller="tests")
    with pytest.raises(InvalidInput, match="model or a deployment"):
        await monitoring.get_series(GetSeries())
    with pytest.raises(InvalidInput):
        await monitoring.get_series(GetSeries(model="churn", buckets=201))
    with pytest.raises(InvalidInput):
        await monitoring.get_series(GetSeries(model="no such name!"))


def test_records_on_a_steps_edge_fall_in_the_later_step() -> None:
    request = GetSeries(model="m", window_s=10.0, buckets=2)
    rows = [(100.0, 0.1, "ok"), (105.0, 0.2, "ok"), (109.9, 0.3, "x")]
    found = series_of(request, rows, 100, 110)
    assert [p.requests for p in found.points] == [1, 2]
    assert found.points[1].errors_by_code == {"x": 1}
