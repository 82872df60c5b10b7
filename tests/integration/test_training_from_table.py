"""Training directly on a plain table (a Parquet file, a PostgreSQL table), without a feature
view: jobs train and record the source in their version's lineage; bad tables answer 400 at
submission, naming the column."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytest_asyncio
import sqlalchemy as sa

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.training.settings import TrainingSettings

pytest.importorskip("torch")  # the training process imports it

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROWS = 300


def customers(seed: int = 3) -> dict[str, list[Any]]:
    """Columns of a table whose ``plan`` follows ``x1 + x2`` and ``spend`` is linear in them."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0.0, 2.0, ROWS)
    x2 = rng.integers(-3, 4, ROWS)
    vip = rng.random(ROWS) < 0.3
    return {
        "customer": [f"c{i}" for i in range(ROWS)],
        "x1": x1.tolist(),
        "x2": x2.tolist(),
        "vip": vip.tolist(),
        "plan": ["pro" if a + b > 0 else "basic" for a, b in zip(x1, x2, strict=True)],
        "spend": (10 + 3 * x1 - 2 * x2 + 5 * vip).tolist(),
        "country": ["fr" if i % 2 else "de" for i in range(ROWS)],
    }


def spec(source: dict[str, Any], **fields: Any) -> dict[str, Any]:
    dataset = {"source": source, "features": ["x1", "x2", "vip"], "label": "plan"}
    return {
        "trainer": "mlp_classifier",
        "model": "plans",
        "dataset": dataset | fields.pop("dataset", {}),
        "hyperparameters": {"epochs": 40, "hidden": 16},
    } | fields


async def train(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    submitted = await client.post("/v1/training/jobs", json=body)
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


async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    folder = tmp_path_factory.mktemp("tables")
    pq.write_table(pa.table(customers()), folder / "customers.parquet")
    async for http in serve(Settings(data_dir=folder)):
        yield http


async def test_a_job_trains_on_a_parquet_table_and_its_lineage_names_it(
    client: httpx.AsyncClient,
) -> None:
    source = {"format": "parquet", "path": "customers.parquet"}
    lgb = pytest.importorskip("lightgbm")
    assert lgb

    job = await train(client, spec(source))
    regression = spec(
        source,
        trainer="lightgbm_regressor",
        model="spend",
        dataset={"label": "spend"},
        hyperparameters={"n_estimators": 20, "min_child_samples": 5},
    )
    tree = await train(client, regression)
    version = (await client.get("/v1/registry/models/plans/versions/1")).json()
    columns = customers()
    x = np.column_stack([columns["x1"], columns["x2"], columns["vip"]]).astype(np.float32)
    answer = await client.post("/v1/predict/plans:1", json={"inputs": {"features": x.tolist()}})

    assert job["status"] == "succeeded", job["error"]
    assert tree["status"] == "succeeded", tree["error"]
    lineage = version["lineage"]
    assert json.loads(lineage["extra"]["source"]) == source
    assert lineage["extra"]["rows"] == str(ROWS)
    assert lineage["dataset_digest"].startswith("sha256:")
    assert lineage["feature_service"] is None
    assert version["signature"]["inputs"][0]["shape"][-1] == 3
    assert answer.status_code == 200, answer.text
    labels = answer.json()["labels"]
    accuracy = np.mean([a == b for a, b in zip(labels, columns["plan"], strict=True)])
    assert accuracy > 0.8  # the model learned the table's rule, on its own columns


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"features": ["x1", "x9", "vip"]}, "'x9' is missing"),
        ({"features": ["x1", "country"]}, "'country' holds string, not numbers"),
        ({"label": "churned"}, "'churned' is missing"),
        ({"source": {"format": "parquet", "path": "/etc/passwd"}}, "outside the source roots"),
        ({"source": {"format": "parquet", "path": "nothing.parquet"}}, "does not exist"),
        ({"feature_service": "churn"}, "give no dataset.feature_service"),
        ({"features": []}, "dataset.features must name"),
        ({"features": ["x1", "plan"]}, "'plan' is also in dataset.features"),
    ],
)
async def test_a_bad_table_is_refused_at_submission_naming_what_is_wrong(
    client: httpx.AsyncClient, change: dict[str, Any], named: str
) -> None:
    body = spec({"format": "parquet", "path": "customers.parquet"}, dataset=change)

    answer = await client.post("/v1/training/jobs", json=body)

    assert answer.status_code == 400, answer.text
    assert named in answer.json()["error"]


async def test_a_regression_label_of_text_is_refused_at_submission(
    client: httpx.AsyncClient,
) -> None:
    body = spec(
        {"format": "parquet", "path": "customers.parquet"},
        trainer="mlp_regressor",
        dataset={"label": "country"},
    )

    answer = await client.post("/v1/training/jobs", json=body)

    assert answer.status_code == 400, answer.text
    assert answer.json()["details"] == {"column": "country"}


async def test_a_job_trains_on_a_postgresql_table(tmp_path: Path, postgres_schema_url: str) -> None:
    engine = sa.create_engine(postgres_schema_url.replace("postgresql:", "postgresql+psycopg:"))
    columns = customers(seed=5)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE customers (customer text, x1 double precision, x2 integer,"
            " vip boolean, plan text, spend numeric(12, 4), country text)"
        )
        rows = [
            dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)
        ]
        conn.execute(
            sa.text(
                "INSERT INTO customers VALUES (:customer, :x1, :x2, :vip, :plan, :spend, :country)"
            ),
            rows,
        )
    engine.dispose()
    settings = Settings(data_dir=tmp_path).with_module(
        TrainingSettings(source_databases=(f"dw={postgres_schema_url}",))
    )
    table = {"format": "postgresql", "database": "dw", "table": "customers"}
    query = {"format": "postgresql", "database": "dw", "query": "SELECT x1, spend FROM customers"}

    async for client in serve(settings):
        job = await train(client, spec(table))
        version = (await client.get("/v1/registry/models/plans/versions/1")).json()
        missing = await client.post("/v1/training/jobs", json=spec(query))
        text = await client.post(
            "/v1/training/jobs", json=spec(table, dataset={"features": ["x1", "country"]})
        )

    assert job["status"] == "succeeded", job["error"]
    assert json.loads(version["lineage"]["extra"]["source"]) == table
    assert missing.status_code == 400, missing.text
    assert "column 'x2' is missing" in missing.json()["error"]
    assert text.status_code == 400, text.text
    assert "'country' holds string, not numbers" in text.json()["error"]
