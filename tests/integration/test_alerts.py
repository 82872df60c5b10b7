"""Alert rules over HTTP and their evaluation at an explicit clock, on SQLite and PostgreSQL;
performance estimated without labels; firing and resolving alerts reaching a webhook."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from app.modules.monitoring.settings import MonitoringSettings
from contracts.common import Tensor, UnprocessableInput
from contracts.inference import Predict
from contracts.monitoring import (
    GetAlert,
    GetEstimatedMetrics,
    GetSummary,
    PutAlert,
    SubmitFeedback,
)
from contracts.notifications import PutWebhook
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx
from tests.integration import test_notifications as hooks
from tests.integration.test_monitoring import Q, identity_classifier

MANUAL = MonitoringSettings(alert_interval_s=0)  # the tests evaluate at their own clock


def _settings(tmp_path: Path, modules: tuple[str, ...], **urls: str) -> Settings:
    settings = Settings(data_dir=tmp_path, modules=modules).with_module(
        MANUAL, InferenceSettings(prediction_log_sample=1.0)
    )
    return settings.replace(database_urls=urls) if urls else settings


@pytest.fixture
async def q(tmp_path: Path, database_url: str) -> AsyncIterator[Q]:
    modules = ("registry", "monitoring", "inference")
    async with Platform(_settings(tmp_path, modules, monitoring=database_url)) as platform:
        yield Q(platform)


def _http(q: Q) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(q.platform, host="127.0.0.1"))
    return httpx.AsyncClient(transport=transport, base_url="http://q")


async def _evaluate(q: Q, now: float) -> dict[str, Any]:
    done = await q.platform.built["monitoring"].service.evaluate_alerts(now=now)
    return {a.name: a for a in done}


async def _events(q: Q) -> list[str]:
    db = q.platform.built["monitoring"].service._db
    query = sa.text("SELECT type FROM monitoring_outbox ORDER BY seq")
    return list(await db.read(lambda c: c.execute(query).scalars().all()))


async def _predict_with_errors(q: Q, model: str, good: int, bad: int) -> None:
    rows = Tensor.from_numpy(np.ones((1, 3), dtype=np.float32))
    for _ in range(good):
        await q.inference.predict(Predict(model=model, inputs={"x": rows}))
    for _ in range(bad):
        with pytest.raises(UnprocessableInput):
            await q.inference.predict(Predict(model=model, inputs={"z": rows}))
    await q.flush()


async def test_an_error_rate_alert_goes_pending_fires_and_resolves(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx(3, 2)))
    async with _http(q) as http:
        put = await http.put(
            "/v1/monitoring/alerts/errors",
            json={
                "model": "lin",
                "signal": "error_rate",
                "threshold": 0.1,
                "window": "5m",
                "for": "1m",
            },
        )
        assert put.status_code == 200, put.text
        assert put.json()["state"] == "ok"
        assert (put.json()["window_s"], put.json()["for_s"]) == (300, 60)

        await _predict_with_errors(q, "lin", good=6, bad=4)
        now = time.time()
        assert (await _evaluate(q, now))["errors"].state == "pending"
        fired = (await _evaluate(q, now + 61))["errors"]
        assert fired.state == "firing"
        assert fired.value == pytest.approx(0.4)
        shown = (await http.get("/v1/monitoring/alerts/errors")).json()
        assert (shown["state"], shown["value"]) == ("firing", pytest.approx(0.4))
        assert await _events(q) == ["AlertFired"]

        # five minutes on, the window holds no record: no data resolves the alert
        resolved = (await _evaluate(q, now + 400))["errors"]
        assert (resolved.state, resolved.value) == ("ok", None)
        assert await _events(q) == ["AlertFired", "AlertResolved"]
        listed = (await http.get("/v1/monitoring/alerts")).json()
        assert [(a["name"], a["state"]) for a in listed["items"]] == [("errors", "ok")]

        deleted = await http.delete("/v1/monitoring/alerts/errors")
        assert deleted.status_code == 200
        assert (await http.get("/v1/monitoring/alerts/errors")).status_code == 404


async def test_a_condition_that_stops_before_its_for_duration_never_fires(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx(3, 2)))
    await q.monitoring.put_alert(
        PutAlert(name="busy", model="lin", signal="prediction_volume", threshold=5, for_s=120)
    )
    await _predict_with_errors(q, "lin", good=8, bad=0)
    now = time.time()
    assert (await _evaluate(q, now))["busy"].state == "pending"
    assert (await _evaluate(q, now + 400))["busy"].state == "ok"  # volume 0 by then
    assert await _events(q) == []

    quiet = PutAlert(
        name="quiet", model="lin", signal="prediction_volume", threshold=1, comparison="below"
    )
    await q.monitoring.put_alert(quiet)
    assert (await _evaluate(q, now + 400))["quiet"].state == "firing"  # at once: for_s is 0
    assert (await q.monitoring.get_alert(GetAlert(name="quiet"))).value == 0


async def test_bad_alerts_are_refused(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx(3, 2)))
    good = {"model": "lin", "signal": "latency_p99_s", "threshold": 0.5}
    async with _http(q) as http:
        unknown_model = await http.put("/v1/monitoring/alerts/a", json={**good, "model": "nope"})
        unknown_signal = await http.put("/v1/monitoring/alerts/a", json={**good, "signal": "vibes"})
        bad_window = await http.put("/v1/monitoring/alerts/a", json={**good, "window": "0s"})
        missing = await http.get("/v1/monitoring/alerts/none")
        removed = await http.delete("/v1/monitoring/alerts/none")
        listed = await http.get("/v1/monitoring/alerts")
    assert unknown_model.status_code == 400, unknown_model.text
    assert "nope" in unknown_model.json()["error"]
    assert unknown_signal.status_code == 400, unknown_signal.text
    assert bad_window.status_code == 400, bad_window.text
    assert (missing.status_code, removed.status_code) == (404, 404)
    assert listed.json()["items"] == []


async def _serve_probabilities(q: Q, model: str, p1: np.ndarray) -> list[str]:
    """Serve the identity classifier ``p1`` (the positive class's probabilities) in batches of
    50; answers the prediction ids."""
    ids = []
    rows = np.column_stack([1 - p1, p1]).astype(np.float32)
    for start in range(0, len(rows), 50):
        x = Tensor.from_numpy(rows[start : start + 50])
        ids.append((await q.inference.predict(Predict(model=model, inputs={"x": x}))).prediction_id)
    await q.flush()
    return ids


async def test_estimated_accuracy_is_served_summarised_and_alerted_on(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="clf", artifact=identity_classifier()))
    rng = np.random.default_rng(11)
    p1 = np.clip(rng.beta(0.7, 0.7, size=500), 0.01, 0.99)  # mostly sure, calibrated
    await _serve_probabilities(q, "clf", p1)
    expected = float(np.mean(np.maximum(p1, 1 - p1)))
    await q.monitoring.put_alert(
        PutAlert(
            name="unsure",
            model="clf",
            signal="estimated_accuracy",
            threshold=expected + 0.05,
            comparison="below",
        )
    )
    async with _http(q) as http:
        answer = await http.get("/v1/monitoring/models/clf/estimated", params={"window": "1h"})
    assert answer.status_code == 200, answer.text
    estimated = answer.json()
    assert estimated["count"] == 10  # logged predictions (batches of 50 rows)
    assert estimated["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-4)
    assert estimated["lower"]["accuracy"] < expected < estimated["upper"]["accuracy"]
    assert {"f1", "auc"} <= set(estimated["metrics"])
    assert estimated["calibration_error"] is None
    assert "calibration unknown" in estimated["warnings"][0]

    fired = (await _evaluate(q, time.time()))["unsure"]
    assert fired.state == "firing"
    assert fired.value == pytest.approx(expected, abs=1e-4)

    summary = await q.monitoring.get_summary(GetSummary(model="clf", window_s=600))
    assert summary.estimated["accuracy"] == pytest.approx(expected, abs=1e-4)
    assert summary.realised == {}


async def test_poor_calibration_is_warned_about(q: Q) -> None:
    await q.registry.register_version(RegisterVersion(name="clf", artifact=identity_classifier()))
    ids = []
    rng = np.random.default_rng(5)
    for _ in range(120):  # says 95 %, right half the time
        x = Tensor.from_numpy(np.asarray([[0.05, 0.95]], dtype=np.float32))
        ids.append((await q.inference.predict(Predict(model="clf", inputs={"x": x}))).prediction_id)
    await q.flush()
    for prediction_id in ids:
        label = int(rng.random() < 0.5)
        await q.monitoring.submit_feedback(SubmitFeedback(prediction_id=prediction_id, label=label))
    estimated = await q.monitoring.get_estimated_metrics(
        GetEstimatedMetrics(model="clf", window_s=3600)
    )
    assert estimated.calibration_rows == 120
    assert estimated.calibration_error is not None
    assert estimated.calibration_error > 0.3
    assert "poorly calibrated" in estimated.warnings[0]
    summary = await q.monitoring.get_summary(GetSummary(model="clf", window_s=600))
    assert 0.3 < summary.realised["accuracy"] < 0.7
    assert summary.estimated["accuracy"] == pytest.approx(0.95)


async def test_a_firing_and_a_resolving_alert_reach_a_webhook(tmp_path: Path) -> None:
    receiver = await hooks.Receiver().start()
    modules = ("registry", "monitoring", "inference", "notifications")
    settings = _settings(tmp_path, modules).with_module(hooks.FAST_RETRIES)
    try:
        async with Platform(settings) as platform:
            q = Q(platform)
            notifications = platform.client("notifications", caller="tests")
            await notifications.put_webhook(
                PutWebhook(name="ops", url=receiver.url, events=["Alert*"], secret=hooks.SECRET)
            )
            await q.registry.register_version(
                RegisterVersion(name="lin", artifact=linear_onnx(3, 2))
            )
            await q.monitoring.put_alert(
                PutAlert(name="errors", model="lin", signal="error_rate", threshold=0.2)
            )
            await _predict_with_errors(q, "lin", good=5, bad=5)
            now = time.time()
            await _evaluate(q, now)
            fired = await receiver.next()
            await _evaluate(q, now + 400)
            resolved = await receiver.next()
    finally:
        await receiver.stop()
    for got in (fired, resolved):
        assert hooks.verify(hooks.SECRET, got.headers["quarry-signature"], got.body)
    assert fired.json()["type"] == "AlertFired"
    assert fired.json()["data"]["name"] == "errors"
    assert fired.json()["data"]["value"] == pytest.approx(0.5)
    assert resolved.json()["type"] == "AlertResolved"
    assert resolved.json()["data"]["value"] is None
