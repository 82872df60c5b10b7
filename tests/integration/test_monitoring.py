"""Monitoring in one process: intake from inference, summaries, /metrics, drift, feedback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from app.modules.monitoring.settings import MonitoringSettings
from app.modules.training.profile import reference_profile
from contracts.common import Conflict, InvalidInput, NotFound, Tensor, UnprocessableInput
from contracts.inference import Predict
from contracts.monitoring import (
    GetRealisedMetrics,
    GetSummary,
    RunDriftCheck,
    SubmitFeedback,
)
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx

COLUMNS = ["a", "b", "c", "d"]


def identity_classifier() -> bytes:
    """``probabilities = x`` for ``x`` of shape ``[batch, 2]``: the test chooses the outputs."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["probabilities"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class Q:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        for name in ("registry", "inference", "monitoring"):
            setattr(self, name, platform.client(name, caller="tests"))

    async def flush(self) -> None:
        await self.platform.built["inference"].service.records.flush()


@pytest.fixture
async def q(tmp_path: Path) -> AsyncIterator[Q]:
    settings = Settings(
        data_dir=tmp_path,
        modules=("registry", "monitoring", "inference"),
    ).with_module(
        InferenceSettings(prediction_log_sample=1.0),
        MonitoringSettings(cost_fp=5.0, cost_fn=2.0),
    )
    async with Platform(settings) as platform:
        yield Q(platform)


async def test_predictions_reach_the_summary_and_metrics(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx(3, 2)))
    rows = Tensor.from_numpy(np.ones((2, 3), dtype=np.float32))
    for _ in range(8):
        await q.inference.predict(Predict(model="lin", inputs={"x": rows}))
    for _ in range(2):
        with pytest.raises(UnprocessableInput):
            await q.inference.predict(Predict(model="lin", inputs={"z": rows}))
    await q.flush()

    summary = await q.monitoring.get_summary(GetSummary(model="lin", window_s=60))

    assert (summary.requests, summary.errors) == (10, 2)
    assert summary.error_rate == pytest.approx(0.2)
    assert summary.errors_by_code == {"unprocessable": 2}
    assert 0 < summary.latency_p50_s <= summary.latency_p99_s
    assert 0 <= summary.slo_compliance <= 1
    assert sum(summary.prediction_distribution.values()) == pytest.approx(1.0)

    transport = httpx.ASGITransport(app=create_app(q.platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        text = (await http.get("/metrics")).text
        over_http = await http.get("/v1/monitoring/models/lin/summary", params={"window": "1m"})
    families = {f.name: f for f in text_string_to_metric_families(text)}
    error_rate = families["quarry_monitoring_error_rate"]
    by_version = {
        s.labels["version"]: s.value for s in error_rate.samples if s.labels["model"] == "lin"
    }
    assert by_version["all"] == pytest.approx(0.2)
    assert by_version["1"] == pytest.approx(0.2)  # the failures happened on version 1
    assert over_http.json()["requests"] == 10


async def register_profiled(q: Q, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sample = rng.normal(size=(800, 4)).astype(np.float32)
    outputs = {"y": (sample @ np.ones((4, 2), dtype=np.float32)).astype(np.float32)}
    profile = reference_profile(COLUMNS, sample, outputs, task=None, seed=seed)
    await q.registry.register_version(
        RegisterVersion(name=name, artifact=linear_onnx(4, 2), reference_profile=profile)
    )


async def send(q: Q, model: str, shift: list[float], seed: int, rows: int = 300) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(rows, 4)) + np.asarray(shift)).astype(np.float32)
    for start in range(0, rows, 10):
        batch = Tensor.from_numpy(x[start : start + 10])
        await q.inference.predict(Predict(model=model, inputs={"x": batch}))
    await q.flush()


async def test_drift_is_reported_on_exactly_the_shifted_features(q: Q) -> None:
    await register_profiled(q, "shifted", seed=1)
    await register_profiled(q, "steady", seed=1)
    await send(q, "shifted", [0.0, 1.5, 0.0, 1.5], seed=2)
    await send(q, "steady", [0.0, 0.0, 0.0, 0.0], seed=2)

    drifted = await q.monitoring.run_drift_check(RunDriftCheck(model="shifted", window_s=600))
    steady = await q.monitoring.run_drift_check(RunDriftCheck(model="steady", window_s=600))

    assert drifted.status == "drift"
    assert drifted.dataset_drift
    assert [f.name for f in drifted.features if f.drifted] == ["b", "d"]
    assert {f.test for f in drifted.features} == {"ks"}
    assert drifted.current_rows == steady.current_rows == 300
    assert steady.status == "ok"
    assert not any(f.drifted for f in steady.features)
    outbox = q.platform.built["monitoring"].service._db
    events = await outbox.read(
        lambda c: c.execute(sa.text("SELECT type FROM monitoring_outbox")).scalars().all()
    )
    assert events == ["DriftDetected"]

    transport = httpx.ASGITransport(app=create_app(q.platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        page = await http.get(f"/v1/monitoring/reports/{drifted.id}/html")
        listed = await http.get("/v1/monitoring/drift/shifted")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.count('class="chart"') >= len(COLUMNS)
    assert [r["id"] for r in listed.json()["items"]] == [drifted.id]


async def test_small_windows_and_missing_profiles_are_not_drift(q: Q) -> None:
    await register_profiled(q, "quiet", seed=1)
    await send(q, "quiet", [5.0, 5.0, 5.0, 5.0], seed=3, rows=20)
    report = await q.monitoring.run_drift_check(RunDriftCheck(model="quiet", window_s=600))
    assert report.status == "insufficient_data"
    assert not report.dataset_drift
    assert "20 logged input rows" in report.message

    await q.registry.register_version(RegisterVersion(name="bare", artifact=linear_onnx(4, 2)))
    with pytest.raises(NotFound, match="reference profile"):
        await q.monitoring.run_drift_check(RunDriftCheck(model="bare"))


async def test_feedback_gives_realised_metrics_and_cost(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="clf", artifact=identity_classifier()))
    probabilities = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    labels = [0, 1, 1, 0, 0, 1]
    revenue = [10.0, 0.0, 5.0, 0.0, 1.0, 2.5]
    ids = []
    for row in probabilities:
        x = Tensor.from_numpy(np.asarray([row], dtype=np.float32))
        ids.append((await q.inference.predict(Predict(model="clf", inputs={"x": x}))).prediction_id)
    await q.flush()
    for prediction_id, label, value in zip(ids, labels, revenue, strict=True):
        await q.monitoring.submit_feedback(
            SubmitFeedback(prediction_id=prediction_id, label=label, value=value)
        )

    realised = await q.monitoring.get_realised_metrics(GetRealisedMetrics(model="clf"))

    # Predicted classes 0 0 1 1 0 1 against 0 1 1 0 0 1: one false negative, one false positive.
    assert realised.task == "classification"
    assert realised.count == 6
    assert realised.metrics["accuracy"] == pytest.approx(4 / 6)
    assert (realised.metrics["tp"], realised.metrics["fp"]) == (2, 1)
    assert (realised.metrics["fn"], realised.metrics["tn"]) == (1, 2)
    assert realised.metrics["f1"] == pytest.approx(2 / 3)
    assert realised.metrics["auc"] == pytest.approx(7 / 9)
    assert realised.cost == pytest.approx(1 * 5.0 + 1 * 2.0)
    assert realised.value == pytest.approx(sum(revenue))

    with pytest.raises(Conflict):
        await q.monitoring.submit_feedback(SubmitFeedback(prediction_id=ids[0], label=1))
    with pytest.raises(NotFound):
        await q.monitoring.submit_feedback(SubmitFeedback(prediction_id="nope", label=1))
    with pytest.raises(InvalidInput):
        await q.monitoring.submit_feedback(SubmitFeedback(prediction_id=ids[1]))


async def test_feedback_over_http(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="clf", artifact=identity_classifier()))
    x = Tensor.from_numpy(np.asarray([[0.1, 0.9]], dtype=np.float32))
    prediction_id = (await q.inference.predict(Predict(model="clf", inputs={"x": x}))).prediction_id
    await q.flush()
    transport = httpx.ASGITransport(app=create_app(q.platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        first = await http.post(
            "/v1/monitoring/feedback", json={"prediction_id": prediction_id, "label": 1}
        )
        again = await http.post(
            "/v1/monitoring/feedback", json={"prediction_id": prediction_id, "label": 1}
        )
        unknown = await http.post(
            "/v1/monitoring/feedback", json={"prediction_id": "x", "label": 1}
        )
        realised: Any = (await http.get("/v1/monitoring/models/clf/realised")).json()
    assert first.status_code == 201, first.text
    assert (again.status_code, unknown.status_code) == (409, 404)
    assert realised["metrics"]["accuracy"] == 1.0


def test_multiclass_feedback_gets_accuracy_and_macro_f1() -> None:
    from app.modules.monitoring.figures import classification_metrics

    probabilities = np.eye(3)[[0, 1, 2, 2]]  # predicts 0, 1, 2, 2
    metrics, cost = classification_metrics(np.array([0, 1, 1, 2]), probabilities, 1.0, 1.0)
    assert metrics["accuracy"] == pytest.approx(0.75)
    # per class F1: class 0 = 1, class 1 = 2/3, class 2 = 2/3
    assert metrics["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert cost is None
