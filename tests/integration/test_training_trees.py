"""The tree-ensemble trainers over HTTP: jobs train, register and serve what the libraries
themselves predict; bad hyperparameters answer 400; broken exports fail their jobs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.training.dataset import split_rows
from app.modules.training.process import thread_budget
from app.modules.training.settings import TrainingSettings
from contracts.training import Split

pytest.importorskip("torch")  # the training process imports it
xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
datasets = pytest.importorskip("sklearn.datasets")

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLASSIFIERS = ["xgboost_classifier", "lightgbm_classifier", "random_forest_classifier"]
REGRESSORS = ["xgboost_regressor", "lightgbm_regressor", "random_forest_regressor"]
SMALL = {
    "xgboost_classifier": {"n_estimators": 20},
    "xgboost_regressor": {"n_estimators": 20},
    "lightgbm_classifier": {"n_estimators": 20, "min_child_samples": 5},
    "lightgbm_regressor": {"n_estimators": 20, "min_child_samples": 5},
    "random_forest_classifier": {"n_estimators": 10},
    "random_forest_regressor": {"n_estimators": 10},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("trees")).with_module(
        TrainingSettings(trainers=("tests.fakes.tree_trainers",))
    )
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


async def train(client: httpx.AsyncClient, spec: dict[str, Any]) -> dict[str, Any]:
    """Submit the job and wait for its outcome."""
    submitted = await client.post("/v1/training/jobs", json=spec)
    assert submitted.status_code == 202, submitted.text
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = (
            await client.get(f"/v1/training/jobs/{submitted.json()['id']}")
        ).json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def predict(client: httpx.AsyncClient, ref: str, x: np.ndarray) -> dict[str, np.ndarray]:
    answer = await client.post(f"/v1/predict/{ref}", json={"inputs": {"features": x.tolist()}})
    assert answer.status_code == 200, answer.text
    return {k: np.asarray(v) for k, v in answer.json()["outputs"].items()}


def table(x: np.ndarray, labels: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    columns = [f"x{i}" for i in range(x.shape[1])]
    rows = [
        {**dict(zip(columns, map(float, row), strict=True)), "label": label}
        for row, label in zip(x, labels, strict=True)
    ]
    return rows, columns


def spec(trainer: str, model: str, rows: list[dict[str, Any]], columns: list[str], **h: Any) -> Any:
    return {
        "trainer": trainer,
        "model": model,
        "dataset": {"rows": rows, "features": columns, "label": "label"},
        "hyperparameters": h,
    }


def platform_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows a job trains and validates on (its default split)."""
    return split_rows(n, Split())


# --- against the libraries used directly ----------------------------------------------------


async def test_xgboost_classifier_matches_xgboost_trained_directly(
    client: httpx.AsyncClient,
) -> None:
    cancer = datasets.load_breast_cancer()
    x = cancer.data.astype(np.float32)
    labels = [str(cancer.target_names[t]) for t in cancer.target]
    rows, columns = table(x, labels)
    h = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.2, "early_stopping_rounds": 10}
    job = await train(client, spec("xgboost_classifier", "cancer", rows, columns, **h))
    assert job["status"] == "succeeded", job["error"]

    classes = sorted(set(labels))  # class ids are the sorted labels' positions
    y = np.array([classes.index(label) for label in labels])
    train_rows, valid_rows = platform_split(len(rows))
    direct = xgb.XGBClassifier(
        n_estimators=60, max_depth=3, learning_rate=0.2, early_stopping_rounds=10,
        tree_method="hist", random_state=0, n_jobs=thread_budget(1),
    )  # fmt: skip
    direct.fit(
        x[train_rows], y[train_rows], eval_set=[(x[valid_rows], y[valid_rows])], verbose=False
    )
    expected = direct.predict_proba(x[valid_rows])
    accuracy = float((expected.argmax(axis=1) == y[valid_rows]).mean())
    assert abs(job["metrics"]["accuracy"] - accuracy) <= 0.01

    served = await predict(client, f"cancer:{job['version']}", x[valid_rows])
    np.testing.assert_allclose(served["probabilities"], expected, rtol=0, atol=1e-5)
    version = (await client.get(f"/v1/registry/models/cancer/versions/{job['version']}")).json()
    assert json.loads(version["lineage"]["extra"]["classes"]) == ["benign", "malignant"]


async def test_lightgbm_regressor_matches_lightgbm_trained_directly(
    client: httpx.AsyncClient,
) -> None:
    diabetes = datasets.load_diabetes()
    x = diabetes.data.astype(np.float32)
    rows, columns = table(x, [float(t) for t in diabetes.target])
    h = {"n_estimators": 100, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 10}
    job = await train(client, spec("lightgbm_regressor", "diabetes", rows, columns, **h))
    assert job["status"] == "succeeded", job["error"]

    y = diabetes.target.astype(np.float32)
    train_rows, valid_rows = platform_split(len(rows))
    params = {
        "objective": "regression", "metric": "rmse", "learning_rate": 0.05, "num_leaves": 15,
        "min_child_samples": 10, "seed": 0, "deterministic": True, "force_row_wise": True,
        "num_threads": thread_budget(1), "verbosity": -1,
    }  # fmt: skip
    train_set = lgb.Dataset(x[train_rows], label=y[train_rows])
    direct = lgb.train(
        params, train_set, num_boost_round=100,
        valid_sets=[lgb.Dataset(x[valid_rows], label=y[valid_rows], reference=train_set)],
        callbacks=[lgb.early_stopping(20, verbose=False)],
    )  # fmt: skip
    expected = direct.predict(x[valid_rows], num_iteration=direct.best_iteration)
    rmse = float(np.sqrt(np.mean((expected - y[valid_rows]) ** 2)))
    assert job["metrics"]["rmse"] <= rmse * 1.02

    served = await predict(client, f"diabetes:{job['version']}", x[valid_rows])
    np.testing.assert_allclose(served["prediction"], expected, rtol=1e-5)


# --- every trainer, on small data -----------------------------------------------------------


def small_classes(n_classes: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(90, 3)).astype(np.float32)
    names = ["red", "green", "blue"][:n_classes]
    ids = (x @ rng.normal(size=(3, n_classes))).argmax(axis=1)
    return x, [names[i] for i in ids]


@pytest.mark.parametrize(
    ("trainer", "n_classes"),
    # binary XGBoost is the breast-cancer job's
    [
        *((name, 3) for name in CLASSIFIERS),
        ("lightgbm_classifier", 2),
        ("random_forest_classifier", 2),
    ],
)
async def test_every_classifier_trains_and_serves(
    client: httpx.AsyncClient, trainer: str, n_classes: int
) -> None:
    x, labels = small_classes(n_classes)
    rows, columns = table(x, labels)
    model = f"{trainer.replace('_', '-')}-{n_classes}"
    job = await train(client, spec(trainer, model, rows, columns, **SMALL[trainer]))
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["accuracy"] > 0.6

    served = await predict(client, f"{model}:{job['version']}", x[:7])
    assert list(served) == ["probabilities"]
    assert served["probabilities"].shape == (7, n_classes)
    np.testing.assert_allclose(served["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    lineage = await lineage_of(client, model, job["version"], columns)
    assert json.loads(lineage["classes"]) == sorted(set(labels))


@pytest.mark.parametrize("trainer", REGRESSORS)
async def test_every_regressor_trains_and_serves(client: httpx.AsyncClient, trainer: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    target = 3.0 * x[:, 0] - 2.0 * (x[:, 1] > 0) + 10.0
    rows, columns = table(x, [float(t) for t in target])
    model = trainer.replace("_", "-")
    job = await train(client, spec(trainer, model, rows, columns, **SMALL[trainer]))
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["r2"] > 0.5

    served = await predict(client, f"{model}:{job['version']}", x[:7])
    assert list(served) == ["prediction"]
    assert served["prediction"].shape == (7,)
    lineage = await lineage_of(client, model, job["version"], columns)
    assert "classes" not in lineage


async def lineage_of(
    client: httpx.AsyncClient, model: str, version: int, columns: list[str]
) -> dict[str, str]:
    """The version's lineage entries, once its feature importances are checked."""
    answer = await client.get(f"/v1/registry/models/{model}/versions/{version}")
    extra: dict[str, str] = answer.json()["lineage"]["extra"]
    importances = json.loads(extra["feature_importances"])
    assert list(importances) == columns
    assert sum(importances.values()) == pytest.approx(1.0)
    assert importances["x0"] == max(importances.values())  # the column the labels follow most
    return extra


# --- refusals and failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trainer", "given", "message"),
    [
        ("xgboost_classifier", {"n_estimators": 0}, "'n_estimators' must be from 1 to 5000"),
        ("lightgbm_regressor", {"n_estimators": 5001}, "'n_estimators' must be from 1 to 5000"),
        ("xgboost_regressor", {"learning_rate": 0}, "'learning_rate' must be above 0"),
        ("lightgbm_classifier", {"learning_rate": 1.5}, "'learning_rate' must be above 0"),
        ("lightgbm_classifier", {"num_leaves": 1}, "'num_leaves' must be from 2"),
        ("lightgbm_regressor", {"min_child_samples": 0}, "'min_child_samples' must be at least 1"),
        ("xgboost_classifier", {"subsample": 0.0}, "'subsample' must be above 0"),
        ("lightgbm_classifier", {"colsample_bytree": 1.2}, "'colsample_bytree' must be above 0"),
        ("xgboost_regressor", {"max_depth": 65}, "'max_depth' must be from 0 (no limit) to 64"),
        ("xgboost_classifier", {"early_stopping_rounds": -1}, "'early_stopping_rounds' must be"),
        ("random_forest_regressor", {"min_samples_leaf": 0}, "'min_samples_leaf' must be"),
        ("random_forest_classifier", {"max_features": "half"}, "'max_features' must be one of"),
        ("random_forest_classifier", {"learning_rate": 0.1}, "unknown hyperparameter"),
    ],
)
async def test_out_of_range_hyperparameters_answer_400(
    client: httpx.AsyncClient, trainer: str, given: dict[str, Any], message: str
) -> None:
    x, labels = small_classes(2)
    rows, columns = table(x[:10], labels[:10])
    answer = await client.post("/v1/training/jobs", json=spec(trainer, "m", rows, columns, **given))
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert answer.json()["details"]["field"] == f"hyperparameters.{next(iter(given))}"


async def test_an_export_that_disagrees_with_its_model_fails_the_job(
    client: httpx.AsyncClient,
) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    rows, columns = table(x, [float(v) for v in x[:, 0]])
    job = await train(client, spec("forest_off_by_one", "off-by-one", rows, columns))
    assert job["status"] == "failed"
    assert "ONNX output 'prediction' differs from the native model by up to 1" in job["error"]
    assert (await client.get("/v1/registry/models/off-by-one/versions")).status_code == 404


async def test_a_tree_job_asked_to_run_on_cuda_fails_with_the_reason(
    client: httpx.AsyncClient,
) -> None:
    x, labels = small_classes(2)
    rows, columns = table(x, labels)
    body = spec("xgboost_classifier", "on-cuda", rows, columns) | {"device": "cuda"}
    job = await train(client, body)
    assert job["status"] == "failed"
    assert job["error"] == (
        "trainer 'xgboost_classifier' runs on the CPU only: ask for device cpu or auto"
    )
