"""Batch jobs on files: rows read from a Parquet or CSV file, results written to a Parquet file
next to the keys, bad declarations refused at submission, bad rows failing the job by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from contracts.common import Conflict, InvalidInput, Tensor, Unavailable
from contracts.features import FeatureSource
from contracts.inference import (
    BatchOutput,
    BatchSource,
    FetchBatchResults,
    GetBatchJob,
    SubmitBatchJob,
)
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx, linear_weights
from tests.integration._batch import failing_on_call, finished, run_by_hand

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FEATURES = ["a", "b", "c"]


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    platform = Platform(Settings(data_dir=tmp_path / "data", log_level="WARNING"))
    await platform.start()
    registry = platform.client("registry", caller="tests")
    await registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
    try:
        yield platform
    finally:
        await platform.stop()


def _root(platform: Platform) -> Path:
    return platform.settings.data_dir


def _table(rows: int, *, seed: int = 5, first_id: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, 3))
    ids = np.arange(first_id, first_id + rows, dtype=np.int64) * 7 + 3
    return pa.table({"id": ids, **{name: values[:, i] for i, name in enumerate(FEATURES)}})


def _source(path: str, **changes: Any) -> BatchSource:
    fields: dict[str, Any] = {
        "source": FeatureSource(format="parquet", path=path),
        "inputs": {"x": FEATURES},
        "keys": ["id"],
    }
    fields.update(changes)
    return BatchSource(**fields)


def _expected(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    weight, bias = linear_weights(seed=0)
    return np.asarray(x.astype(np.float32) @ weight + bias)


async def test_a_parquet_file_is_scored_into_a_parquet_file_that_matches_predict(
    platform: Platform,
) -> None:
    rows = 200_000
    table = _table(rows)
    pq.write_table(table, _root(platform) / "customers.parquet", row_group_size=50_000)
    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
        body = {
            "model": "lin",
            "source": {
                "source": {"format": "parquet", "path": "customers.parquet"},
                "inputs": {"x": FEATURES},
                "keys": ["id"],
            },
            "output": {"path": "scores/customers.parquet"},
            "chunk_rows": 4096,
        }
        (_root(platform) / "scores").mkdir()
        submitted = await client.post("/v1/inference/batch-jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        assert (submitted.json()["rows"], submitted.json()["output"]) == (
            rows,
            "scores/customers.parquet",
        )
        job = await finished(platform.client("inference", caller="tests"), submitted.json()["id"])
        assert (job.status, job.rows_done, job.version, job.error) == ("succeeded", rows, 1, None)

        scored = pq.read_table(_root(platform) / "scores" / "customers.parquet")
        sample = np.random.default_rng(0).choice(rows, size=500, replace=False)
        x = np.column_stack([table.column(n).to_numpy() for n in FEATURES])
        answer = await client.post("/v1/predict/lin", json={"inputs": {"x": x[sample].tolist()}})
        results = await client.get(f"/v1/inference/batch-jobs/{job.id}/results")

    assert scored.column_names == ["id", "y_0", "y_1"]
    assert scored.num_rows == rows
    assert scored.column("id").to_pylist() == table.column("id").to_pylist()  # once each, in order
    y = np.column_stack([scored.column("y_0").to_numpy(), scored.column("y_1").to_numpy()])
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(y[sample], np.asarray(answer.json()["outputs"]["y"], "float32"))
    np.testing.assert_allclose(y, _expected(x), rtol=1e-5, atol=1e-6)
    assert results.status_code == 409  # the results are in the file
    assert [p.name for p in (_root(platform) / "scores").iterdir()] == ["customers.parquet"]


async def test_a_csv_directory_scores_into_results_by_row_number(platform: Platform) -> None:
    folder = _root(platform) / "daily"
    folder.mkdir()
    first, second = _table(5, seed=1), _table(4, seed=2, first_id=5)
    for name, part in (("1.csv", first), ("2.csv", second)):
        import pyarrow.csv as csv

        csv.write_csv(part, folder / name)
    inference = platform.client("inference", caller="tests")
    job = await inference.submit_batch_job(
        SubmitBatchJob(
            model="lin:1",
            inputs={},
            source=_source("daily", source=FeatureSource(format="csv", path="daily"), keys=[]),
            chunk_rows=3,
        )
    )
    done = await finished(inference, job.id)
    chunks = [c async for c in inference.fetch_batch_results(FetchBatchResults(id=job.id))]

    assert (done.status, done.rows, done.rows_done, done.output) == ("succeeded", 9, 9, None)
    both = pa.concat_tables([first, second])
    x = np.column_stack([both.column(n).to_numpy() for n in FEATURES])
    assert [c.offset for c in chunks] == [0, 3, 5, 8]  # each file in chunks of its own
    outputs = np.concatenate([c.outputs["y"].to_numpy() for c in chunks])
    np.testing.assert_allclose(outputs, _expected(x), rtol=1e-5, atol=1e-6)


async def test_inline_inputs_may_go_to_an_output_file_with_row_numbers(
    platform: Platform,
) -> None:
    x = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    inference = platform.client("inference", caller="tests")
    job = await inference.submit_batch_job(
        SubmitBatchJob(
            model="lin",
            inputs={"x": Tensor.from_numpy(x)},
            output=BatchOutput(path="inline.parquet"),
            chunk_rows=3,
        )
    )
    done = await finished(inference, job.id)
    scored = pq.read_table(_root(platform) / "inline.parquet")
    again = await inference.submit_batch_job(
        SubmitBatchJob(
            model="lin",
            inputs={"x": Tensor.from_numpy(x[:2])},
            output=BatchOutput(path="inline.parquet", overwrite=True),  # an earlier output
        )
    )
    replaced = await finished(inference, again.id)

    assert (done.status, done.output) == ("succeeded", "inline.parquet")
    assert scored.column("row").to_pylist() == list(range(7))
    np.testing.assert_allclose(scored.column("y_1").to_numpy(), _expected(x)[:, 1], rtol=1e-5)
    assert replaced.status == "succeeded"
    assert pq.read_table(_root(platform) / "inline.parquet").num_rows == 2


async def test_a_resumed_job_writes_every_row_once(platform: Platform) -> None:
    table = _table(10)
    pq.write_table(table, _root(platform) / "in.parquet")
    jobs = run_by_hand(platform)
    calls = failing_on_call(jobs, 3)
    inference = platform.client("inference", caller="tests")
    job = await inference.submit_batch_job(
        SubmitBatchJob(
            model="lin:1",
            inputs={},
            source=_source("in.parquet"),
            output=BatchOutput(path="out.parquet"),
            chunk_rows=3,
        )
    )
    with pytest.raises(Unavailable):
        await jobs.run(job.id)
    halfway = await inference.get_batch_job(GetBatchJob(id=job.id))
    parts = sorted(p.name for p in (_root(platform) / f".out.parquet.{job.id}.parts").iterdir())
    visible_halfway = (_root(platform) / "out.parquet").exists()
    await jobs.run(job.id)  # the redelivery
    await jobs.run(job.id)  # a duplicate after the outcome: nothing to do
    done = await inference.get_batch_job(GetBatchJob(id=job.id))
    scored = pq.read_table(_root(platform) / "out.parquet")

    assert (halfway.status, halfway.rows_done) == ("running", 6)
    assert parts == ["000000000000000.parquet", "000000000000003.parquet"]
    assert not visible_halfway  # the file appears whole, once the job succeeds
    assert (done.status, done.rows_done) == ("succeeded", 10)
    assert calls == [3, 3, 3, 3, 1]  # chunk 3 twice (failed, then retried), nothing redone
    assert scored.column("id").to_pylist() == table.column("id").to_pylist()
    x = np.column_stack([table.column(n).to_numpy() for n in FEATURES])
    np.testing.assert_allclose(scored.column("y_0").to_numpy(), _expected(x)[:, 0], rtol=1e-5)
    assert sorted(p.name for p in _root(platform).iterdir() if p.name.startswith(".out")) == []


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"source": FeatureSource(format="parquet", path="../x.parquet")},
            "source.source.path",
            "outside the source roots",
        ),
        (
            {"source": FeatureSource(format="parquet", path="nope.parquet")},
            "source.source.path",
            "does not exist",
        ),
        ({"inputs": {"x": ["a", "b", "nope"]}}, "nope", "column 'nope' is missing"),
        ({"inputs": {"x": ["a", "when"]}}, "when", "column 'when' holds timestamp"),
        ({"inputs": {}}, "source", "one of inputs or entities"),
        ({"inputs": {"x": []}}, "source.inputs", "names no columns"),
        ({"keys": ["nope"]}, "nope", "column 'nope' is missing"),
        (
            {"source": FeatureSource(format="postgresql", database="dw", table="t")},
            "source.source.database",
            "not configured",
        ),
    ],
)
async def test_bad_sources_are_refused_at_submission(
    platform: Platform, changes: dict[str, Any], field: str, message: str
) -> None:
    table = _table(4).append_column("when", pa.array([np.datetime64("2024-01-01", "us")] * 4))
    pq.write_table(table, _root(platform) / "in.parquet")
    inference = platform.client("inference", caller="tests")
    with pytest.raises(InvalidInput, match=message) as caught:
        await inference.submit_batch_job(
            SubmitBatchJob(model="lin", inputs={}, source=_source("in.parquet", **changes))
        )
    assert field in caught.value.details.values()


@pytest.mark.parametrize(
    ("output", "error", "message"),
    [
        (BatchOutput(path="/etc/out.parquet"), InvalidInput, "outside the source roots"),
        (BatchOutput(path="out.csv"), InvalidInput, "not a .parquet file"),
        (BatchOutput(path="missing/out.parquet"), InvalidInput, "directory does not exist"),
        (BatchOutput(path="in.parquet", overwrite=True), InvalidInput, "input files"),
        (BatchOutput(path="old.parquet"), Conflict, "set overwrite"),
        (BatchOutput(path="old.parquet", overwrite=True), Conflict, "not a batch job's output"),
    ],
)
async def test_bad_outputs_are_refused_at_submission(
    platform: Platform, output: BatchOutput, error: type[Exception], message: str
) -> None:
    pq.write_table(_table(4), _root(platform) / "in.parquet")
    pq.write_table(_table(1), _root(platform) / "old.parquet")
    inference = platform.client("inference", caller="tests")
    with pytest.raises(error, match=message):
        await inference.submit_batch_job(
            SubmitBatchJob(model="lin", inputs={}, source=_source("in.parquet"), output=output)
        )


async def test_bad_rows_fail_the_job_naming_file_rows_and_column(platform: Platform) -> None:
    table = _table(10)
    values = table.column("b").to_pylist()
    values[7] = None
    table = table.set_column(2, "b", pa.array(values, pa.float64()))
    pq.write_table(table, _root(platform) / "holes.parquet")
    pq.write_table(_table(4).drop_columns(["c"]), _root(platform) / "narrow.parquet")
    inference = platform.client("inference", caller="tests")
    holes = await inference.submit_batch_job(
        SubmitBatchJob(
            model="lin",
            inputs={},
            source=_source("holes.parquet"),
            output=BatchOutput(path="holes-out.parquet"),
            chunk_rows=4,
        )
    )
    narrow = await inference.submit_batch_job(
        SubmitBatchJob(
            model="lin", inputs={}, source=_source("narrow.parquet", inputs={"x": ["a", "b"]})
        )
    )
    failed = await finished(inference, holes.id)
    refused = await finished(inference, narrow.id)

    assert failed.status == "failed"
    assert "holes.parquet, rows 4-7, column 'b': 1 rows have no value" in (failed.error or "")
    assert not (_root(platform) / "holes-out.parquet").exists()
    assert not [p for p in _root(platform).iterdir() if p.name.startswith(".holes-out")]
    assert refused.status == "failed"
    assert "narrow.parquet, rows 0-3" in (refused.error or "")
    assert "shape" in (refused.error or "")


async def test_http_answers_400_for_a_bad_path(platform: Platform) -> None:
    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
        body = {
            "model": "lin",
            "source": {
                "source": {"format": "parquet", "path": "/etc/passwd"},
                "inputs": {"x": FEATURES},
            },
        }
        answer = await client.post("/v1/inference/batch-jobs", json=body)
        neither = await client.post("/v1/inference/batch-jobs", json={"model": "lin"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_input"
    assert "outside the source roots" in answer.json()["error"]
    assert neither.status_code == 400, neither.text


async def test_a_job_whose_file_changed_since_submission_fails_instead_of_mixing_rows(
    platform: Platform,
) -> None:
    pq.write_table(_table(10), _root(platform) / "in.parquet")
    jobs = run_by_hand(platform)
    inference = platform.client("inference", caller="tests")
    job = await inference.submit_batch_job(
        SubmitBatchJob(
            model="lin:1",
            inputs={},
            source=_source("in.parquet"),
            output=BatchOutput(path="out.parquet"),
            chunk_rows=3,
        )
    )
    pq.write_table(_table(12, seed=9), _root(platform) / "in.parquet")  # rewritten meanwhile
    await jobs.run(job.id)
    done = await inference.get_batch_job(GetBatchJob(id=job.id))

    assert (done.status, done.rows_done) == ("failed", 0)
    assert "changed since the job was submitted" in (done.error or "")
    assert not (_root(platform) / "out.parquet").exists()
