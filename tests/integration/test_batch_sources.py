"""Batch jobs on entity keys (inputs built by the model's feature service) and on PostgreSQL
tables and queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import app
from app.bootstrap import Platform
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from contracts.common import InvalidInput
from contracts.features import FeatureSource
from contracts.inference import (
    BatchOutput,
    BatchSource,
    Predict,
    SubmitBatchJob,
)
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx, linear_weights
from tests.integration._batch import finished
from tests.integration.test_predict_by_entity import train_like

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


async def test_entity_keys_are_scored_with_the_features_the_model_was_trained_on(
    tmp_path: Path,
) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        await train_like(q)
        users = pa.table({"uid": [3, 1, 2, 0, 1], "region": ["n", "s", "s", "e", "w"]})
        pq.write_table(users, tmp_path / "users.parquet")
        job = await q.inference.submit_batch_job(
            SubmitBatchJob(
                model="churn",
                inputs={},
                source=BatchSource(
                    source=FeatureSource(
                        format="parquet", path="users.parquet", entities={"user_id": "uid"}
                    ),
                    entities=["user_id"],
                    keys=["uid", "region"],
                ),
                output=BatchOutput(path="churn.parquet"),
                chunk_rows=2,
            )
        )
        done = await finished(q.inference, job.id)
        direct = await q.inference.predict(
            Predict(model="churn", entities={"user_id": [3, 1, 2, 0, 1]})
        )

    assert (done.status, done.rows_done, done.error) == ("succeeded", 5, None)
    scored = pq.read_table(tmp_path / "churn.parquet")
    assert scored.column_names == ["uid", "region", "y_0", "y_1"]
    assert scored.column("region").to_pylist() == ["n", "s", "s", "e", "w"]
    y = np.column_stack([scored.column("y_0").to_numpy(), scored.column("y_1").to_numpy()])
    np.testing.assert_array_equal(y, direct.outputs["y"].to_numpy())


async def test_an_entity_without_its_features_fails_the_job_naming_its_rows(
    tmp_path: Path,
) -> None:
    async with app.connect(data_dir=tmp_path) as q:
        await train_like(q)
        pq.write_table(pa.table({"user_id": [1, 2, 77]}), tmp_path / "users.parquet")
        job = await q.inference.submit_batch_job(
            SubmitBatchJob(
                model="churn",
                inputs={},
                source=BatchSource(
                    source=FeatureSource(format="parquet", path="users.parquet"),
                    entities=["user_id"],
                ),
                chunk_rows=2,
            )
        )
        done = await finished(q.inference, job.id)

    assert done.status == "failed"
    assert (done.rows_done, done.error is not None) == (2, True)
    assert "users.parquet, rows 2-2: " in (done.error or "")
    assert "users:spend" in (done.error or "")


@pytest.mark.postgres
async def test_a_postgresql_table_or_query_is_read_in_the_order_of_its_keys(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    engine = sa.create_engine(postgres_schema_url.replace("postgresql:", "postgresql+psycopg:"))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(25, 3))
    order = rng.permutation(25)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scoring (id bigint, a float8, b float8, c real)")
        conn.exec_driver_sql(
            "INSERT INTO scoring VALUES (%(id)s, %(a)s, %(b)s, %(c)s)",
            [
                {"id": int(i), "a": x[i, 0], "b": x[i, 1], "c": float(np.float32(x[i, 2]))}
                for i in order
            ],
        )
    engine.dispose()
    config = InferenceSettings(source_databases=(f"dw={postgres_schema_url}",))
    platform = Platform(Settings(data_dir=tmp_path, log_level="WARNING").with_module(config))
    await platform.start()
    try:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        inference = platform.client("inference", caller="tests")
        jobs = []
        for where in (
            FeatureSource(format="postgresql", database="dw", table="scoring"),
            FeatureSource(
                format="postgresql", database="dw", query="SELECT * FROM scoring WHERE id < 10"
            ),
        ):
            jobs.append(
                await inference.submit_batch_job(
                    SubmitBatchJob(
                        model="lin",
                        inputs={},
                        source=BatchSource(
                            source=where, inputs={"x": ["a", "b", "c"]}, keys=["id"]
                        ),
                        output=BatchOutput(path=f"out-{len(jobs)}.parquet"),
                        chunk_rows=7,
                    )
                )
            )
        done = [await finished(inference, job.id) for job in jobs]
        with pytest.raises(InvalidInput, match="needs keys"):
            await inference.submit_batch_job(
                SubmitBatchJob(
                    model="lin",
                    inputs={},
                    source=BatchSource(
                        source=FeatureSource(format="postgresql", database="dw", table="scoring"),
                        inputs={"x": ["a", "b", "c"]},
                    ),
                )
            )
        with pytest.raises(InvalidInput, match="column 'd' is missing"):
            await inference.submit_batch_job(
                SubmitBatchJob(
                    model="lin",
                    inputs={},
                    source=BatchSource(
                        source=FeatureSource(format="postgresql", database="dw", table="scoring"),
                        inputs={"x": ["a", "b", "d"]},
                        keys=["id"],
                    ),
                )
            )
    finally:
        await platform.stop()

    assert [(j.status, j.rows) for j in done] == [("succeeded", 25), ("succeeded", 10)]
    weight, bias = linear_weights(seed=0)
    expected = x.astype(np.float32) @ weight + bias
    for job, rows in zip(done, (25, 10), strict=True):
        scored = pq.read_table(tmp_path / (job.output or ""))
        assert scored.column("id").to_pylist() == list(range(rows))
        np.testing.assert_allclose(scored.column("y_0").to_numpy(), expected[:rows, 0], rtol=1e-5)


async def test_a_classifier_writes_its_text_labels_and_class_probabilities(
    tmp_path: Path,
) -> None:
    pytest.importorskip("skl2onnx")
    from tests.integration.test_string_labels import iris_classifier

    artifact, x, expected = iris_classifier()
    columns = {f"m{j}": x[:, j].astype(np.float64) for j in range(4)}
    pq.write_table(pa.table({"flower": ["a", "b", "c", "d"], **columns}), tmp_path / "iris.parquet")
    async with app.connect(data_dir=tmp_path) as q:
        await q.registry.register_version(RegisterVersion(name="iris", artifact=artifact))
        job = await q.inference.submit_batch_job(
            SubmitBatchJob(
                model="iris",
                inputs={},
                source=BatchSource(
                    source=FeatureSource(format="parquet", path="iris.parquet"),
                    inputs={"input": list(columns)},
                    keys=["flower"],
                ),
                output=BatchOutput(path="iris-scores.parquet"),
            )
        )
        done = await finished(q.inference, job.id)
        direct = await q.inference.predict(Predict(model="iris", inputs={"input": x}))

    assert (done.status, done.error) == ("succeeded", None)
    scored = pq.read_table(tmp_path / "iris-scores.parquet")
    assert scored.column("flower").to_pylist() == ["a", "b", "c", "d"]
    assert scored.column("output_label").to_pylist() == expected
    probabilities = direct.outputs["output_probability"].to_numpy()
    for j in range(3):
        np.testing.assert_array_equal(
            scored.column(f"output_probability_{j}").to_numpy(), probabilities[:, j]
        )
    assert scored.column("label").to_pylist() == direct.labels == expected  # its classes
