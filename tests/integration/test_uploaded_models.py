"""A model trained elsewhere is first-class: a scikit-learn classifier exported with its ZipMap
registers over HTTP, answers class names, gets a reference profile from a CSV file, and its
drift is detected like a Quarry-trained model's."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

import app
from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from contracts.common import Tensor
from contracts.inference import Predict
from contracts.registry import GetReferenceProfile

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass
class Iris:
    x: np.ndarray
    names: np.ndarray
    model: RandomForestClassifier
    onnx: bytes


@pytest.fixture(scope="module")
def iris() -> Iris:
    data = load_iris()
    x = data.data.astype(np.float32)
    names = np.asarray(data.target_names)[data.target]
    model = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, names)
    return Iris(x=x, names=names, model=model, onnx=to_onnx(model, x[:1]).SerializeToString())


@dataclass
class Q:
    platform: Platform
    http: httpx.AsyncClient

    async def upload(self, name: str, data: bytes, **metadata: Any) -> httpx.Response:
        return await self.http.post(
            f"/v1/registry/models/{name}/versions",
            files={"file": ("model.onnx", data)},
            data={"metadata": json.dumps(metadata)} if metadata else None,
        )

    async def reference_csv(self, name: str, text: str) -> httpx.Response:
        return await self.http.put(
            f"/v1/registry/models/{name}/versions/1/reference",
            files={"file": ("reference.csv", text.encode())},
        )


@pytest.fixture
async def q(tmp_path: Path) -> AsyncIterator[Q]:
    settings = Settings(
        data_dir=tmp_path, modules=("registry", "monitoring", "inference")
    ).with_module(InferenceSettings(prediction_log_sample=1.0))
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield Q(platform, http)


def csv_text(x: np.ndarray, labels: np.ndarray | None = None, columns: list[str] = COLUMNS) -> str:
    out = io.StringIO()
    out.write(",".join(columns + (["label"] if labels is not None else [])) + "\n")
    for i, row in enumerate(x):
        cells = [f"{v:.2f}" for v in row[: len(columns)]]
        out.write(",".join(cells + ([str(labels[i])] if labels is not None else [])) + "\n")
    return out.getvalue()


async def test_an_exported_classifier_answers_labels_and_drifts(q: Q, iris: Iris) -> None:
    lineage = {"extra": {"columns": json.dumps(COLUMNS)}}
    registered = await q.upload("iris", iris.onnx, lineage=lineage)
    assert registered.status_code == 201, registered.text
    version = registered.json()
    assert version["task"] == "classification"
    assert version["classes"] == ["setosa", "versicolor", "virginica"]
    assert version["params"]["converted"] == "zipmap-removed"
    outputs = {o["name"]: o for o in version["signature"]["outputs"]}
    assert outputs["output_probability"]["dtype"] == "FP32"
    assert outputs["output_probability"]["shape"] == [-1, 3]

    rows = iris.x[::10]
    answer = await q.http.post("/v1/predict/iris", json={"inputs": {"X": rows.tolist()}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["labels"] == iris.model.predict(rows).tolist()
    assert np.asarray(answer.json()["outputs"]["output_probability"]).shape == (len(rows), 3)
    shown = (await q.http.get("/v1/registry/models/iris/versions/1")).json()
    assert (shown["task"], shown["classes"]) == (version["task"], version["classes"])
    metadata = (await q.http.get("/v2/models/iris")).json()
    assert metadata["parameters"]["classes"] == ["setosa", "versicolor", "virginica"]

    reference = await q.reference_csv("iris", csv_text(iris.x, iris.names))
    assert reference.status_code == 200, reference.text
    assert reference.json()["has_reference_profile"]
    profile = (await q.http.get("/v1/registry/models/iris/versions/1/reference-profile")).json()
    assert profile["columns"] == COLUMNS
    assert profile["rows"] == len(iris.x)
    assert profile["task"] == "classification"

    rng = np.random.default_rng(7)
    shifted = iris.x[rng.integers(0, len(iris.x), 200)] + np.float32(2.5)
    inference = q.platform.client("inference", caller="tests")
    for start in range(0, len(shifted), 20):
        batch = Tensor.from_numpy(shifted[start : start + 20])
        await inference.predict(Predict(model="iris", inputs={"X": batch}))
    await q.platform.built["inference"].service.records.flush()

    report = await q.http.post("/v1/monitoring/drift/iris", json={"window": "10m"})
    assert report.status_code == 200, report.text
    assert report.json()["status"] == "drift"
    assert {f["name"] for f in report.json()["features"] if f["drifted"]} == set(COLUMNS)
    prediction = report.json()["prediction"]  # the predicted class, from output_probability
    assert (prediction["kind"], prediction["drifted"]) == ("categorical", True)
    db = q.platform.built["monitoring"].service._db
    events = await db.read(
        lambda c: c.execute(sa.text("SELECT type FROM monitoring_outbox")).scalars().all()
    )
    assert events == ["DriftDetected"]


async def test_reference_rows_come_as_json_with_generated_column_names(q: Q, iris: Iris) -> None:
    assert (await q.upload("plain", iris.onnx)).status_code == 201
    rows = [{f"X_{i}": float(v) for i, v in enumerate(r)} for r in iris.x[:40]]

    answer = await q.http.put("/v1/registry/models/plain/versions/1/reference", json={"rows": rows})

    assert answer.status_code == 200, answer.text
    profile = (await q.http.get("/v1/registry/models/plain/versions/1/reference-profile")).json()
    assert profile["columns"] == ["X_0", "X_1", "X_2", "X_3"]
    assert set(profile["predictions"]) == {"output_label", "output_probability"}


async def test_reference_rows_come_as_parquet_with_a_list_valued_input(q: Q, iris: Iris) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    assert (await q.upload("iris", iris.onnx)).status_code == 201
    table = pyarrow.table({"X": iris.x.tolist(), "label": iris.names.tolist()})
    buffer = io.BytesIO()
    parquet.write_table(table, buffer)

    answer = await q.http.put(
        "/v1/registry/models/iris/versions/1/reference",
        files={"file": ("reference.parquet", buffer.getvalue())},
        data={"metadata": json.dumps({"seed": 3})},
    )

    assert answer.status_code == 200, answer.text
    profile = (await q.http.get("/v1/registry/models/iris/versions/1/reference-profile")).json()
    assert profile["columns"] == ["X_0", "X_1", "X_2", "X_3"]
    assert profile["rows"] == len(iris.x)


async def test_bad_reference_rows_answer_400_naming_the_column(q: Q, iris: Iris) -> None:
    lineage = {"extra": {"columns": json.dumps(COLUMNS)}}
    assert (await q.upload("iris", iris.onnx, lineage=lineage)).status_code == 201

    missing = await q.reference_csv("iris", csv_text(iris.x, columns=COLUMNS[:3]))
    text = csv_text(iris.x[:5]).replace("5.10", "tall", 1)
    mistyped = await q.reference_csv("iris", text)
    empty = await q.http.put("/v1/registry/models/iris/versions/1/reference", json={"rows": []})
    header_only = await q.reference_csv("iris", ",".join(COLUMNS) + "\n")
    unknown_label = await q.reference_csv("iris", csv_text(iris.x[:5], np.array(["rose"] * 5)))

    assert missing.status_code == 400
    assert "'petal_width'" in missing.json()["error"]
    assert missing.json()["details"]["column"] == "petal_width"
    assert mistyped.status_code == 400
    assert "'sepal_length'" in mistyped.json()["error"]
    assert "text" in mistyped.json()["error"]
    assert empty.status_code == header_only.status_code == 400
    assert "no rows" in empty.json()["error"]
    assert unknown_label.status_code == 400
    assert "'rose'" in unknown_label.json()["error"]
    assert not (await q.http.get("/v1/registry/models/iris/versions/1")).json()[
        "has_reference_profile"
    ]


async def test_classes_that_do_not_match_the_probabilities_are_refused(q: Q, iris: Iris) -> None:
    answer = await q.upload("iris", iris.onnx, classes=["a", "b"])

    assert answer.status_code == 400
    assert "2 classes" in answer.json()["error"]
    assert answer.json()["details"]["field"] == "classes"
    regression = await q.upload("iris", iris.onnx, task="regression", classes=["a", "b", "c"])
    assert regression.status_code == 400


async def test_python_helpers_convert_register_and_profile(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris(as_frame=True)
    frame = data.frame.drop(columns="target").astype("float32")
    names = np.asarray(data.target_names)[data.target]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(frame, names)
    boosted = xgboost.XGBClassifier(n_estimators=3, max_depth=2).fit(frame, data.target)
    diabetes = load_diabetes(as_frame=True)
    regressor = lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(
        diabetes.data, diabetes.target
    )

    modules = ("registry", "monitoring", "inference")
    async with app.connect(data_dir=tmp_path, modules=modules) as q:
        sklearn_version = await q.registry.register_sklearn(pipeline, sample=frame, name="lr")
        xgb_version = await q.registry.register_xgboost(
            boosted, sample=frame, name="xgb", classes=list(data.target_names)
        )
        lgbm_version = await q.registry.register_lightgbm(
            regressor, sample=diabetes.data, name="lgbm", description="diabetes"
        )
        rows = {"X": frame.to_numpy()[:3]}
        predicted = await q.inference.predict(Predict(model="xgb", inputs=rows))
        profile = await q.registry.get_reference_profile(GetReferenceProfile(ref="lr:1"))

    assert sklearn_version.classes == ["setosa", "versicolor", "virginica"]
    assert sklearn_version.task == "classification"
    assert sklearn_version.has_reference_profile
    assert profile.columns == list(frame.columns)
    assert predicted.labels == [data.target_names[i] for i in boosted.predict(frame[:3])]
    assert (xgb_version.task, lgbm_version.task) == ("classification", "regression")
    assert lgbm_version.classes == []
    assert lgbm_version.description == "diabetes"
    assert lgbm_version.params["converter"].startswith("onnxmltools")


async def test_an_uploaded_model_is_retrained_on_drift_by_its_policys_job(
    tmp_path: Path, iris: Iris
) -> None:
    """The policy names a trainer and a dataset: drift of the uploaded model starts a retraining
    that trains, passes its gate and rolls the new version out on the model's deployment."""
    from app.modules.training.settings import TrainingSettings
    from contracts.inference import Deployment, PutDeployment, RolloutPolicy, Route
    from contracts.training import (
        Dataset,
        Gate,
        ListRetrainings,
        PutRetrainingPolicy,
        RetrainingPolicy,
        TrainingJobSpec,
    )

    settings = Settings(data_dir=tmp_path).with_module(
        InferenceSettings(prediction_log_sample=1.0),
        TrainingSettings(heartbeat_s=60.0, stale_s=120.0),
    )
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            q = Q(platform, http)
            lineage = {"extra": {"columns": json.dumps(COLUMNS)}}
            assert (await q.upload("iris", iris.onnx, lineage=lineage)).status_code == 201
            assert (await q.reference_csv("iris", csv_text(iris.x, iris.names))).status_code == 200
            inference = platform.client("inference", caller="tests")
            training = platform.client("training", caller="tests")
            live = Deployment(name="iris-live", routes=[Route(model="iris:1", weight=1.0)])
            await inference.put_deployment(PutDeployment(deployment=live))
            rows = [
                {**dict(zip(COLUMNS, map(float, x), strict=True)), "species": str(name)}
                for x, name in zip(iris.x, iris.names, strict=True)
            ]
            job = TrainingJobSpec(
                trainer="random_forest_classifier",
                model="iris",
                dataset=Dataset(label="species", features=COLUMNS, rows=rows),
                hyperparameters={"n_estimators": 10, "max_depth": 4},
                gate=Gate(metric="accuracy", threshold=0.8),
            )
            steps = RolloutPolicy(steps=[50.0, 100.0], interval_s=0.01, min_requests=1)
            policy = RetrainingPolicy(model="iris", deployment="iris-live", rollout=steps, job=job)
            await training.put_retraining_policy(PutRetrainingPolicy(policy=policy))

            shifted = iris.x[::3] + np.float32(2.5)
            await inference.predict(Predict(model="iris", inputs={"X": Tensor.from_numpy(shifted)}))
            await platform.built["inference"].service.records.flush()
            report = await q.http.post("/v1/monitoring/drift/iris", json={"window": "10m"})
            assert report.json()["status"] == "drift", report.text

            sagas = platform.built["training"].service.retrainings
            deadline = asyncio.get_running_loop().time() + 60
            while not (
                found := await training.list_retrainings(ListRetrainings(model="iris"))
            ).items:
                assert asyncio.get_running_loop().time() < deadline, "DriftDetected started nothing"
                await asyncio.sleep(0.05)  # the event reaches training through the outbox relay
            [saga] = found.items
            assert saga.trigger == f"drift:{report.json()['id']}"
            while (saga := await sagas.advance(saga.id)).status == "training":
                assert asyncio.get_running_loop().time() < deadline + 120, saga
                await asyncio.sleep(0.05)

    assert saga.status == "rolling_out", saga
    assert saga.version == 2
    assert saga.rollout_id is not None
