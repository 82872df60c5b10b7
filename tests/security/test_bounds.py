"""Numbers out of range are one 400 in the error shape at the door, never a 500 from deeper
down (an overflow, a database error) and never a stored row that breaks a later start-up."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app.bootstrap import Platform, create_app
from app.kernel.cursors import decode_cursor, encode_cursor
from app.kernel.settings import Settings
from app.modules.training.settings import TrainingSettings
from contracts.common import InvalidInput

HUGE = "99999999999999999999"  # past 64 bits: SQLite's OverflowError
PAST_INT4 = str(2**31)  # past PostgreSQL's INTEGER: a DataError
SPEC = {
    "trainer": "mlp_regressor",
    "model": "lin",
    "dataset": {"rows": [{"a": 1.0, "y": 2.0}], "features": ["a"], "label": "y"},
}


def is_400(answer: httpx.Response) -> bool:
    body = answer.json()
    return (
        answer.status_code == 400
        and set(body) == {"error", "code", "details"}
        and body["code"] == "invalid_input"
    )


async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path).with_module(TrainingSettings(max_time_limit_s=7200.0))
    async for http in serve(settings):
        yield http


@pytest.fixture(params=["sqlite", "postgres"])
async def features(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, modules=("features",))
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_schema_url")
        settings = settings.replace(database_urls={"features": url})
    async for http in serve(settings):
        yield http


# --- training: a spec out of range is refused before anything is stored ---------------------


@pytest.mark.parametrize(
    "change",
    [
        {"time_limit_s": 1e308},
        {"time_limit_s": "1e999"},  # JSON has no infinity; this is the nearest a client gets
        {"time_limit_s": -1.0},
        {"time_limit_s": 0},
        {"time_limit_s": 7201.0},  # over QUARRY_TRAINING_MAX_TIME_LIMIT_S
        {"split": {"seed": -1}},
        {"split": {"seed": 2**100}},
        {"max_attempts": 2**40},
    ],
    ids=str,
)
async def test_training_specs_out_of_range_are_400_and_store_nothing(
    client: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    pytest.importorskip("torch")
    raw = json.dumps({**SPEC, **change}).replace('"1e999"', "1e999")

    answer = await client.post(
        "/v1/training/jobs", content=raw, headers={"content-type": "application/json"}
    )

    assert is_400(answer), answer.text
    field = next(iter(change))
    assert field in answer.json()["error"]
    assert (await client.get("/v1/training/jobs")).json()["items"] == []


async def test_the_largest_allowed_time_limit_is_accepted(client: httpx.AsyncClient) -> None:
    pytest.importorskip("torch")
    answer = await client.post("/v1/training/jobs", json={**SPEC, "time_limit_s": 7200.0})

    assert answer.status_code == 202, answer.text
    assert answer.json()["spec"]["time_limit_s"] == 7200.0


async def test_a_spec_built_in_process_is_held_to_the_same_bounds(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from contracts.training import (
        Dataset,
        ListTrainingJobs,
        Split,
        SubmitTrainingJob,
        TrainingJobSpec,
    )

    spec = TrainingJobSpec(
        trainer="mlp_regressor",
        model="lin",
        dataset=Dataset(rows=[{"a": 1.0, "y": 2.0}], features=["a"], label="y"),
        split=Split(seed=-1),
    )
    async with Platform(Settings(data_dir=tmp_path, modules=("registry", "training"))) as q:
        training = q.client("training", caller="tests")
        with pytest.raises(InvalidInput, match="seed"):
            await training.submit_job(SubmitTrainingJob(spec=spec))
        assert (await training.list_jobs(ListTrainingJobs())).items == []


# --- path and query parameters --------------------------------------------------------------


@pytest.mark.parametrize("number", [PAST_INT4, HUGE])
async def test_feature_versions_past_the_columns_are_400(
    features: httpx.AsyncClient, number: str
) -> None:
    view = {"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}
    assert (await features.put("/v1/features/views/users", json=view)).status_code == 200
    service = {"features": ["users:age"]}
    assert (await features.put("/v1/features/services/s", json=service)).status_code == 200

    answers = [
        await features.get("/v1/features/views/users", params={"version": number}),
        await features.get("/v1/features/views/x", params={"version": number}),
        await features.get("/v1/features/services/s", params={"version": number}),
        await features.get("/v1/features/services/x", params={"version": number}),
        await features.get("/v1/features/views/users", params={"version": "0"}),
    ]

    assert all(is_400(a) for a in answers), [a.text for a in answers]
    assert answers[0].json()["details"] == {"field": "version"}
    assert (await features.get("/v1/features/views/users?version=1")).status_code == 200


LISTS = [
    "/v1/registry/models",
    "/v1/registry/models/m/versions",
    "/v1/features/views",
    "/v1/features/services",
    "/v1/inference/deployments",
    "/v1/inference/rollouts",
    "/v1/inference/deployments/d/rollouts",
    "/v1/monitoring/drift/m",
    "/v1/training/jobs",
    "/v1/training/retrainings",
]


@pytest.mark.parametrize("limit", ["0", "-1", "501", PAST_INT4, HUGE])
async def test_every_page_limit_is_bounded(client: httpx.AsyncClient, limit: str) -> None:
    answers = {path: await client.get(path, params={"limit": limit}) for path in LISTS}

    assert {p: a.status_code for p, a in answers.items()} == dict.fromkeys(LISTS, 400)
    assert all(is_400(a) for a in answers.values())
    assert all("limit" in a.json()["error"] for a in answers.values())


@pytest.mark.parametrize("number", [PAST_INT4, HUGE, "0"])
async def test_other_numbers_in_paths_and_queries_are_400(
    client: httpx.AsyncClient, number: str
) -> None:
    answers = [
        await client.get(f"/v1/registry/models/m/versions/{number}"),
        await client.delete(f"/v1/registry/models/m/versions/{number}"),
        await client.post(f"/v1/registry/models/m/versions/{number}/archive"),
        await client.get(f"/v1/registry/models/m/versions/{number}/reference-profile"),
        await client.get("/v1/monitoring/models/m/summary", params={"version": number}),
        await client.get("/v1/monitoring/models/m/realised", params={"version": number}),
        await client.get("/v1/monitoring/models/m/realised", params={"buckets": number}),
    ]

    assert all(is_400(a) for a in answers), [a.text for a in answers]


@pytest.mark.parametrize("window", ["1e308d", "nan", "inf", "-5m"])
async def test_monitoring_windows_are_finite_and_bounded(
    client: httpx.AsyncClient, window: str
) -> None:
    answers = [
        await client.get("/v1/monitoring/models/m/summary", params={"window": window}),
        await client.get("/v1/monitoring/models/m/realised", params={"window": window}),
        await client.post("/v1/monitoring/drift/m", json={"window": window}),
    ]

    assert all(is_400(a) for a in answers), [a.text for a in answers]


async def test_bodies_of_other_modules_are_bounded(client: httpx.AsyncClient) -> None:
    answers = [
        await client.post(
            "/v1/inference/batch-jobs", json={"model": "m", "inputs": {}, "chunk_rows": 0}
        ),
        await client.put(
            "/v1/inference/deployments/d",
            json={"routes": [{"model": "m:1", "weight": 1}], "cache_ttl_s": 1e308},
        ),
        await client.post(
            "/v1/inference/deployments/d/rollouts",
            json={"candidate": "m:1", "policy": {"interval_s": 1e308}},
        ),
        await client.put("/v1/training/policies/m", json={"interval_s": 1e308}),
        await client.put("/v1/registry/models/m/aliases/a", json={"version": 2**31}),
        await client.post("/v1/features/views/v/rows", json={"rows": [], "chunk_rows": -1}),
        await client.post("/v1/monitoring/drift/m", json={"share_threshold": 2}),
    ]

    assert all(is_400(a) for a in answers), [a.text for a in answers]


@pytest.mark.parametrize(
    ("cursor", "types"),
    [
        (encode_cursor("v", "iris", 2**64), (str, int)),
        (encode_cursor("job", 2**64, "x"), (float, str)),
        ("WyJqb2IiLDFlOTk5LCJ4Il0", (float, str)),  # ["job",1e999,"x"]: infinity
    ],
    ids=["int", "int-as-float", "inf"],
)
def test_cursors_holding_numbers_no_column_holds_are_refused(
    cursor: str, types: tuple[type, ...]
) -> None:
    kind = "v" if types[0] is str else "job"
    with pytest.raises(InvalidInput, match="invalid cursor"):
        decode_cursor(cursor, kind, *types)


# --- start-up never depends on one row ------------------------------------------------------


async def test_a_stored_job_that_cannot_run_fails_and_the_platform_starts(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from app.modules.training import store

    settings = Settings(data_dir=tmp_path, modules=("registry", "features", "training"))
    async with Platform(settings):  # creates the training tables
        pass
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'training.db'}")
    now = time.time()
    with engine.begin() as conn:  # what a version without bounds stored, and then died on
        conn.execute(
            store.jobs.insert().values(
                id="old",
                model="lin",
                spec={**SPEC, "time_limit_s": 1e308, "split": {"seed": -1, "validation": 0.2}},
                status="queued",
                attempt=0,
                max_attempts=3,
                epoch=0,
                epochs=0,
                metrics={},
                cancel_requested=False,
                created_at=now,
                updated_at=now,
            )
        )
    engine.dispose()

    async for http in serve(settings):
        job = (await http.get("/v1/training/jobs/old")).json()
        listed = (await http.get("/v1/training/jobs")).json()
        fresh = await http.post("/v1/training/jobs", json=SPEC)

        assert job["status"] == "failed", job
        assert "start-up" in job["error"]
        assert "time_limit_s" in job["error"] or "seed" in job["error"]
        assert [j["id"] for j in listed["items"]] == ["old"]
        assert fresh.status_code == 202, fresh.text


# --- names: a service name outside the name pattern is refused like a view's ----------------


@pytest.mark.parametrize("name", ["\x84", ".hidden", "a b"])
async def test_a_feature_service_name_outside_the_pattern_is_a_400(
    features: httpx.AsyncClient, name: str
) -> None:
    view = {"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}
    assert (await features.put("/v1/features/views/users", json=view)).status_code < 300

    answer = await features.put(f"/v1/features/services/{name}", json={"features": ["users:age"]})

    assert answer.status_code in (400, 404), answer.text
    listed = (await features.get("/v1/features/services")).json()
    assert listed["items"] == []


# --- values the database refuses: a 400, not a 500 (found by schemathesis on PostgreSQL) ------


async def test_a_cursor_holding_a_nul_character_is_a_400(features: httpx.AsyncClient) -> None:
    answer = await features.get(
        "/v1/features/views",
        params={"cursor": "\u7113\U0002ac55\u00edc\U000b6af6\u008f\u00b96t\x00"},
    )

    # SQLite stores NUL in text (an empty page); PostgreSQL refuses it: a 400, never a 500.
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        assert answer.json()["code"] == "invalid_input"
    else:
        assert answer.json()["items"] == []
