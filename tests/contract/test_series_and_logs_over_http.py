"""The monitoring series and a training job's log lines over HTTP RPC, from a `quarry serve`
hosting both: answers decode, and refusals come back as the same error classes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from app.kernel import calls
from app.kernel.rpc import RemoteModule
from contracts import monitoring as monitoring_contract
from contracts import training as training_contract
from contracts.common import InvalidInput, NotFound
from contracts.inference import PredictionRecord
from contracts.monitoring import GetSeries, MonitoringService, RecordPredictions
from contracts.training import GetJobLogs, TrainingService
from tests.fakes.server import Server

TOKEN = "series-and-logs-token"

pytestmark = pytest.mark.slow  # starts a server process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(
        tmp_path_factory.mktemp("series-and-logs") / "data",
        env={"QUARRY_SERVICE_TOKEN": TOKEN, "QUARRY_MODULES": "registry,monitoring,training"},
    ).start()
    yield started
    started.stop()


@pytest.fixture
async def monitoring(server: Server) -> AsyncIterator[MonitoringService]:
    remote = RemoteModule(
        "monitoring", server.url, MonitoringService, monitoring_contract.VERSION, token=TOKEN
    )
    yield calls.bind(
        MonitoringService, remote.proxy(), module="monitoring", caller="tests", placement="remote"
    )
    await remote.aclose()


@pytest.fixture
async def training(server: Server) -> AsyncIterator[TrainingService]:
    remote = RemoteModule(
        "training", server.url, TrainingService, training_contract.VERSION, token=TOKEN
    )
    yield calls.bind(
        TrainingService, remote.proxy(), module="training", caller="tests", placement="remote"
    )
    await remote.aclose()


async def test_a_series_comes_over_http(monitoring: MonitoringService) -> None:
    deployment = f"live-{uuid.uuid4().hex[:8]}"
    record = PredictionRecord(
        prediction_id=uuid.uuid4().hex,
        model="churn",
        version=1,
        status="unavailable",
        latency_s=0.01,
        at=datetime.now(UTC),
        deployment=deployment,
    )
    await monitoring.record_predictions(RecordPredictions(records=[record]))
    found = await monitoring.get_series(GetSeries(deployment=deployment, buckets=3))
    assert [p.requests for p in found.points] == [0, 0, 1]
    assert found.points[-1].errors_by_code == {"unavailable": 1}
    assert found.points[0].latency_p99_s is None
    with pytest.raises(InvalidInput):
        await monitoring.get_series(GetSeries())


async def test_an_unknown_jobs_log_is_not_found_over_http(training: TrainingService) -> None:
    with pytest.raises(NotFound):
        await training.get_job_logs(GetJobLogs(id="no-such-job"))
