"""Data expectations end to end: fitted on a version's training profile, set on a feature view
(a push breaking one is refused naming the row and the feature), and counted on served inputs
(a new category raises the per-feature count and fires its alert); alert rules over a
deployment's traffic and over a feature view's freshness. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from app.modules.monitoring.settings import MonitoringSettings
from app.modules.training.profile import reference_profile
from contracts.common import Tensor
from contracts.inference import Deployment, Predict, PutDeployment, Route
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx
from tests.integration.test_alerts import _evaluate, _events
from tests.integration.test_monitoring import Q

COLUMNS = ["age", "plan", "score"]


@pytest.fixture
async def q(tmp_path: Path, database_url: str) -> AsyncIterator[Q]:
    settings = Settings(
        data_dir=tmp_path, modules=("registry", "features", "monitoring", "inference")
    ).with_module(
        MonitoringSettings(alert_interval_s=0), InferenceSettings(prediction_log_sample=1.0)
    )
    async with Platform(settings.replace(database_urls={"monitoring": database_url})) as platform:
        yield Q(platform)


@pytest.fixture
async def http(q: Q) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(q.platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
        yield client


def _inputs(rows: int, seed: int, *, plan: int | None = None) -> np.ndarray:
    """``age`` in [20, 60], ``plan`` one of 0, 1, 2, ``score`` normal."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.uniform(20, 60, rows),
            rng.integers(0, 3, rows) if plan is None else np.full(rows, plan),
            rng.normal(size=rows),
        ]
    )
    return x.astype(np.float32)


async def _register(q: Q, name: str) -> None:
    x = _inputs(1000, seed=1)
    outputs = {"y": (x @ np.ones((3, 2), dtype=np.float32)).astype(np.float32)}
    profile = reference_profile(COLUMNS, x, outputs, task=None, seed=1)
    await q.registry.register_version(
        RegisterVersion(name=name, artifact=linear_onnx(3, 2), reference_profile=profile)
    )


async def _serve(q: Q, model: str, x: np.ndarray) -> None:
    await q.inference.predict(Predict(model=model, inputs={"x": Tensor.from_numpy(x)}))
    await q.flush()


async def test_expectations_fitted_on_a_profile_refuse_a_push_naming_row_and_feature(
    q: Q, http: httpx.AsyncClient
) -> None:
    await _register(q, "churn")
    fitted = await http.get("/v1/monitoring/models/churn:1/expectations", params={"view": "users"})
    assert fitted.status_code == 200, fitted.text
    body = fitted.json()
    assert body["fitted_from"] == "churn:1"
    rules = {r["feature"]: r for r in body["expectations"]}
    assert rules["plan"]["categories"] == ["0", "1", "2"]
    assert rules["plan"]["dtype"] == "int"
    assert rules["age"]["min"] < 20 < 60 < rules["age"]["max"] < 65

    view = {
        "entities": ["user_id"],
        "features": [
            {"name": "age", "dtype": "float"},
            {"name": "plan", "dtype": "int"},
            {"name": "score", "dtype": "float"},
        ],
    }
    assert (await http.put("/v1/features/views/users", json=view)).is_success
    put = await http.put(
        "/v1/features/views/users/expectations",
        json={"expectations": body["expectations"], "fitted_from": body["fitted_from"]},
    )
    assert put.status_code == 200, put.text

    at = datetime.now(UTC).isoformat()
    rows = [
        {"user_id": 1, "event_timestamp": at, "age": 30.0, "plan": 1, "score": 0.1},
        {"user_id": 2, "event_timestamp": at, "age": 41.0, "plan": 7, "score": 0.2},
    ]
    refused = await http.post("/v1/features/views/users/rows", json={"rows": rows})
    assert refused.status_code == 400, refused.text
    assert refused.json()["details"]["row"] == 1
    assert refused.json()["details"]["field"] == "plan"
    assert "row 1, 'plan'" in refused.json()["error"]
    rows[1]["plan"] = 2
    assert (await http.post("/v1/features/views/users/rows", json={"rows": rows})).is_success

    unprofiled = await http.get("/v1/monitoring/models/nothing/expectations")
    assert unprofiled.status_code == 404


async def test_served_inputs_with_a_new_category_raise_its_count_and_fire_its_alert(
    q: Q, http: httpx.AsyncClient
) -> None:
    await _register(q, "churn")
    rule = {
        "model": "churn",
        "signal": "expectation_violations",
        "feature": "plan",
        "threshold": 0,
        "window": "10m",
    }
    put = await http.put("/v1/monitoring/alerts/new-plan", json=rule)
    assert put.status_code == 200, put.text
    assert put.json()["target"] == "model"

    await _serve(q, "churn", _inputs(40, seed=2))
    assert (await _evaluate(q, time.time()))["new-plan"].state == "ok"
    calm = (await http.get("/v1/monitoring/models/churn/violations")).json()
    assert (calm["rows"], calm["total"]) == (40, 0)

    await _serve(q, "churn", _inputs(25, seed=3, plan=7))  # a plan no training row had
    counted = (await http.get("/v1/monitoring/models/churn/violations")).json()
    assert counted["rows"] == 65
    plan = next(f for f in counted["features"] if f["feature"] == "plan")
    assert (plan["version"], plan["count"], plan["kinds"]) == (1, 25, {"category": 25})
    fired = (await _evaluate(q, time.time()))["new-plan"]
    assert (fired.state, fired.value) == ("firing", 25)
    assert await _events(q) == ["AlertFired"]

    outliers = _inputs(5, seed=4)
    outliers[:, 0] = 500.0  # ages far outside the training range
    await _serve(q, "churn", outliers)
    ages = (await http.get("/v1/monitoring/models/churn/violations")).json()
    age = next(f for f in ages["features"] if f["feature"] == "age")
    assert age["kinds"] == {"range": 5}


async def test_a_deployment_rule_watches_the_traffic_it_serves(
    q: Q, http: httpx.AsyncClient
) -> None:
    await q.registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx(3, 2)))
    busy = {"deployment": "front", "signal": "prediction_volume", "threshold": 3}
    unknown = await http.put("/v1/monitoring/alerts/busy", json=busy)
    assert unknown.status_code == 400, unknown.text  # no traffic through it yet
    assert "front" in unknown.json()["error"]

    deployment = Deployment(name="front", routes=[Route(model="lin:1", weight=1.0)])
    await q.inference.put_deployment(PutDeployment(deployment=deployment))
    for seed in range(5):
        await _serve(q, "front", _inputs(1, seed=seed))
    await _serve(q, "lin", _inputs(1, seed=9))  # straight to the model: not the deployment's

    put = await http.put("/v1/monitoring/alerts/busy", json=busy)
    assert put.status_code == 200, put.text
    assert (put.json()["target"], put.json()["model"]) == ("deployment", "front")
    fired = (await _evaluate(q, time.time()))["busy"]
    assert (fired.state, fired.value) == ("firing", 5)

    for body in (
        {**busy, "signal": "drift_share"},  # measured per model version
        {**busy, "model": "lin"},  # two targets
        {**busy, "version": 1},
        {"model": "lin", "signal": "error_rate", "threshold": 1, "feature": "age"},
        {"model": "lin", "signal": "expectation_violations", "threshold": 1, "feature": "x" * 129},
    ):
        refused = await http.put("/v1/monitoring/alerts/other", json=body)
        assert refused.status_code == 400, (body, refused.text)


async def test_a_freshness_rule_fires_on_a_stale_view_and_resolves_on_a_fresh_row(
    q: Q, http: httpx.AsyncClient
) -> None:
    view = {"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}
    assert (await http.put("/v1/features/views/users", json=view)).is_success
    stale: dict[str, Any] = {"view": "users", "signal": "feature_freshness", "threshold": 3600}
    assert (await http.put("/v1/monitoring/alerts/stale", json=stale)).is_success
    now = time.time()
    assert (await _evaluate(q, now))["stale"].value is None  # no rows: no data

    old = datetime.now(UTC) - timedelta(hours=2)
    row = {"user_id": 1, "event_timestamp": old.isoformat(), "age": 3.0}
    assert (await http.post("/v1/features/views/users/rows", json={"rows": [row]})).is_success
    fired = (await _evaluate(q, now))["stale"]
    assert fired.state == "firing"
    assert fired.value == pytest.approx(7200, abs=120)

    row["event_timestamp"] = datetime.now(UTC).isoformat()
    assert (await http.post("/v1/features/views/users/rows", json={"rows": [row]})).is_success
    assert (await _evaluate(q, time.time()))["stale"].state == "ok"
    assert await _events(q) == ["AlertFired", "AlertResolved"]

    for body in (
        {**stale, "view": "nope"},
        {**stale, "signal": "error_rate"},
        {"model": "users", "signal": "feature_freshness", "threshold": 1},
    ):
        refused = await http.put("/v1/monitoring/alerts/other", json=body)
        assert refused.status_code == 400, (body, refused.text)
