"""Prediction records: one per prediction (success or error), sampled inputs, bounded buffer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from app.bootstrap import Platform
from app.kernel.ids import ordered_id
from app.kernel.settings import Settings
from app.modules.inference.records import Recorder
from app.modules.inference.service import LocalInferenceService
from app.modules.inference.settings import InferenceSettings
from contracts.common import NotFound, Tensor, UnprocessableInput
from contracts.inference import InferenceService, Predict, PredictionRecord
from contracts.registry import RegisterVersion, RegistryService
from tests.fakes.models import linear_onnx

ROWS = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)


class ListSink:
    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []

    async def write(self, records: list[PredictionRecord]) -> None:
        self.records.extend(records)


class BlockedSink:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def write(self, records: list[PredictionRecord]) -> None:
        self.calls += 1
        await self.release.wait()


async def _platform(
    tmp_path: Path, sample: float, modules: tuple[str, ...] = ("registry", "inference")
) -> Platform:
    settings = Settings(data_dir=tmp_path, events_poll_s=0.05, modules=modules).with_module(
        InferenceSettings(prediction_log_sample=sample)
    )
    return await Platform(settings).__aenter__()


@pytest.fixture
async def platform(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Platform]:
    started = await _platform(tmp_path, getattr(request, "param", 0.1))
    yield started
    await started.stop()


def _service(platform: Platform) -> LocalInferenceService:
    service = platform.built["inference"].service
    assert isinstance(service, LocalInferenceService)
    return service


async def _model(platform: Platform) -> tuple[str, InferenceService]:
    registry: RegistryService = platform.client("registry", caller="tests")
    await registry.register_version(RegisterVersion(name="rec", artifact=linear_onnx()))
    return "rec:1", platform.client("inference", caller="tests")


async def test_successes_and_errors_each_produce_a_record(platform: Platform) -> None:
    service = _service(platform)
    sink = ListSink()
    service.records.sink = sink
    model, inference = await _model(platform)

    answer = await inference.predict(Predict(model=model, inputs={"x": Tensor.from_numpy(ROWS)}))
    with pytest.raises(UnprocessableInput):
        await inference.predict(Predict(model=model, inputs={"z": Tensor.from_numpy(ROWS)}))
    with pytest.raises(NotFound):
        await inference.predict(Predict(model="nope:1", inputs={"x": Tensor.from_numpy(ROWS)}))
    await service.records.flush()

    ok, unprocessable, missing = sink.records
    assert (ok.prediction_id, ok.model, ok.version, ok.status) == (
        answer.prediction_id,
        "rec",
        1,
        "ok",
    )
    np.testing.assert_allclose(
        ok.outputs["y"].to_numpy(), answer.outputs["y"].to_numpy(), rtol=1e-6
    )
    assert ok.latency_s > 0
    assert (unprocessable.status, unprocessable.version, unprocessable.outputs) == (
        "unprocessable",
        1,  # the version whose signature refused the inputs
        {},
    )
    assert (missing.status, missing.model, missing.version) == ("not_found", "nope:1", None)
    assert len({r.prediction_id for r in sink.records}) == 3
    assert service.records.written == 3


@pytest.mark.parametrize(
    ("platform", "attached"), [(0.0, False), (1.0, True)], indirect=["platform"]
)
async def test_inputs_are_attached_for_the_sample(platform: Platform, attached: bool) -> None:
    service = _service(platform)
    sink = ListSink()
    service.records.sink = sink
    model, inference = await _model(platform)

    for _ in range(5):
        await inference.predict(Predict(model=model, inputs={"x": Tensor.from_numpy(ROWS)}))
    await service.records.flush()

    assert len(sink.records) == 5
    if attached:
        assert all(r.inputs is not None for r in sink.records)
        np.testing.assert_array_equal(sink.records[0].inputs["x"].to_numpy(), ROWS)  # type: ignore[index]
    else:
        assert all(r.inputs is None for r in sink.records)


async def test_a_blocked_sink_costs_counted_drops_not_latency(platform: Platform) -> None:
    service = _service(platform)
    await service.records.stop()
    sink = BlockedSink()
    recorder = Recorder(sink, sample=1.0, capacity=3, batch_size=1, interval_s=0.01)
    service.records = recorder
    await recorder.start()
    model, inference = await _model(platform)
    request = Predict(model=model, inputs={"x": Tensor.from_numpy(ROWS)})

    async def many() -> None:
        for _ in range(20):
            await inference.predict(request)

    await asyncio.wait_for(many(), timeout=10)  # completes while the sink never returns

    assert sink.calls == 1
    assert not sink.release.is_set()
    assert recorder.recorded == 20
    assert recorder.dropped == 20 - 1 - 3  # one batch in the sink, three buffered
    sink.release.set()
    await recorder.stop()  # the batch the sink held is cancelled; the buffered three are written
    assert (recorder.written, recorder.dropped) == (3, 17)


class QueueSink:
    """Puts each batch's size on a queue; ``during_first`` runs while the first batch is written."""

    def __init__(self, during_first: Callable[[], None] = lambda: None) -> None:
        self.sizes: asyncio.Queue[int] = asyncio.Queue()
        self._during_first = during_first
        self._writes = 0

    async def write(self, records: list[PredictionRecord]) -> None:
        self._writes += 1
        if self._writes == 1:
            self._during_first()
        self.sizes.put_nowait(len(records))


def _record(recorder: Recorder, count: int = 1) -> None:
    for _ in range(count):
        recorder.record(
            prediction_id=ordered_id(), model="m", version=1, status="ok", latency_s=0.001
        )


async def test_under_load_whole_batches_are_handed_over() -> None:
    recorder: Recorder
    sink = QueueSink(during_first=lambda: _record(recorder, 3))
    recorder = Recorder(sink, batch_size=5, interval_s=3600)
    await recorder.start()
    try:
        _record(recorder, 5)
        assert await asyncio.wait_for(sink.sizes.get(), 10) == 5
        # the three that came in during that write wait for their batch to fill
        assert sink.sizes.empty()
        assert recorder.pending == 3
        _record(recorder, 2)
        assert await asyncio.wait_for(sink.sizes.get(), 10) == 5
        assert recorder.written == 10
    finally:
        await recorder.stop()


async def test_a_partial_batch_is_handed_over_after_the_interval() -> None:
    sink = QueueSink()
    recorder = Recorder(sink, batch_size=500, interval_s=0.01)
    await recorder.start()
    try:
        _record(recorder, 2)
        assert await asyncio.wait_for(sink.sizes.get(), 10) == 2
        assert recorder.pending == 0
    finally:
        await recorder.stop()


async def test_without_monitoring_records_are_dropped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        platform = await _platform(tmp_path, 0.1)
    try:
        model, inference = await _model(platform)
        await inference.predict(Predict(model=model, inputs={"x": Tensor.from_numpy(ROWS)}))
        await _service(platform).records.flush()
        assert _service(platform).records.dropped == 1
    finally:
        await platform.stop()
    warnings = [r for r in caplog.records if "no monitoring module" in r.getMessage()]
    assert len(warnings) == 1


async def test_with_monitoring_every_record_reaches_it(tmp_path: Path) -> None:
    platform = await _platform(tmp_path, 1.0, ("registry", "monitoring", "inference"))
    try:
        model, inference = await _model(platform)
        for _ in range(3):
            await inference.predict(Predict(model=model, inputs={"x": Tensor.from_numpy(ROWS)}))
        await _service(platform).records.flush()
        assert (_service(platform).records.written, _service(platform).records.dropped) == (3, 0)
    finally:
        await platform.stop()
