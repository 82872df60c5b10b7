"""Predict by entity: inference builds a version's inputs through the features contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import app
from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from contracts.common import Unavailable, UnprocessableInput
from contracts.features import (
    Feature,
    FitTransforms,
    PushRows,
    PutFeatureService,
    PutFeatureView,
    Standardize,
)
from contracts.inference import Predict
from contracts.registry import Lineage, RegisterVersion
from tests.fakes.models import linear_onnx, linear_weights

HOUR_AGO = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
AGES = [20.0, 30.0, 40.0, 50.0]


@dataclass
class Trained:
    state: str
    mean: float
    std: float


async def train_like(q: Any) -> Trained:
    """What a training job leaves behind: features, a fitted state and a registered version."""
    await q.features.put_view(
        PutFeatureView(
            name="users",
            entities=["user_id"],
            features=[
                Feature(name="age", dtype="float"),
                Feature(name="visits", dtype="int", default=0),
                Feature(name="spend", dtype="float", on_missing="error"),
            ],
        )
    )
    rows = [
        {"user_id": i, "event_timestamp": HOUR_AGO, "age": age, "spend": 10.0 * i}
        for i, age in enumerate(AGES)
    ]
    await q.features.push(PushRows(view="users", rows=rows))
    await q.features.put_service(
        PutFeatureService(
            name="churn",
            features=["users:age", "users:visits", "users:spend"],
            transforms=[Standardize(input="users:age")],
        )
    )
    entity_rows = [
        {"user_id": i, "event_timestamp": datetime.now(UTC).isoformat()} for i in range(4)
    ]
    state = await q.features.fit_transforms(FitTransforms(service="churn", entity_rows=entity_rows))
    await q.registry.register_version(
        RegisterVersion(
            name="churn",
            artifact=linear_onnx(3, 2),
            lineage=Lineage(feature_service="churn:1", transform_state=state.id),
        )
    )
    await q.registry.register_version(RegisterVersion(name="plain", artifact=linear_onnx(3, 2)))
    return Trained(state=state.id, mean=float(np.mean(AGES)), std=float(np.std(AGES)))


def expected(trained: Trained, age: float, visits: float, spend: float) -> np.ndarray:
    weight, bias = linear_weights(3, 2)
    x = np.array([[(age - trained.mean) / trained.std, visits, spend]], dtype=np.float32)
    return (x @ weight + bias)[0]


async def test_in_process_predict_by_entity_with_overrides(tmp_path: Path) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        trained = await train_like(q)

        answer = await q.inference.predict(Predict(model="churn", entities={"user_id": [1, 3]}))
        overridden = await q.inference.predict(
            Predict(
                model="churn",
                entities={"user_id": [2]},
                features={"users:spend": [99.0], "users:age": [None]},
            )
        )

        y = answer.outputs["y"].to_numpy()
        np.testing.assert_allclose(y[0], expected(trained, 30.0, 0, 10.0), rtol=1e-5)
        np.testing.assert_allclose(y[1], expected(trained, 50.0, 0, 30.0), rtol=1e-5)
        y2 = overridden.outputs["y"].to_numpy()
        np.testing.assert_allclose(y2[0], expected(trained, 40.0, 0, 99.0), rtol=1e-5)


async def test_entities_without_what_the_model_needs_are_refused(tmp_path: Path) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        await train_like(q)
        with pytest.raises(UnprocessableInput, match="'users:spend'"):
            await q.inference.predict(Predict(model="churn", entities={"user_id": [77]}))
        with pytest.raises(UnprocessableInput, match="not trained from a feature service"):
            await q.inference.predict(Predict(model="plain", entities={"user_id": [1]}))


async def test_without_a_features_module_predict_by_entity_is_unavailable(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, modules=("registry", "inference"))
    async with Platform(settings) as platform:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(
            RegisterVersion(
                name="churn", artifact=linear_onnx(3, 2), lineage=Lineage(feature_service="c:1")
            )
        )
        inference = platform.client("inference", caller="tests")
        with pytest.raises(Unavailable, match="QUARRY_REMOTE_FEATURES"):
            await inference.predict(Predict(model="churn", entities={"user_id": [1]}))


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Trained]]:
    async with Platform(Settings(data_dir=tmp_path)) as platform:
        modules = ("registry", "features", "inference")
        q = type("Q", (), {m: platform.client(m, caller="tests") for m in modules})
        trained = await train_like(q)
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            yield client, trained


async def test_predict_by_entity_over_http(http: tuple[httpx.AsyncClient, Trained]) -> None:
    client, trained = http
    answer = await client.post(
        "/v1/predict/churn", json={"entities": {"user_id": [0]}, "features": {"users:visits": [5]}}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"]) == ("churn", 1)
    np.testing.assert_allclose(body["outputs"]["y"][0], expected(trained, 20.0, 5, 0.0), rtol=1e-5)

    missing = await client.post("/v1/predict/churn", json={"entities": {"user_id": [404]}})
    assert missing.status_code == 422
    assert "users:spend" in missing.json()["error"]
    neither = await client.post("/v1/predict/churn", json={"outputs": ["y"]})
    assert neither.status_code == 400
