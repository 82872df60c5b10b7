"""A view's data expectations over HTTP: a push breaking one is refused naming the row and the
feature, or written and reported under ``warn``; bad specs are refused; on embedded defaults
and on PostgreSQL + Redis; and through a msgpack round trip of the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import Platform
from app.kernel import calls
from app.kernel.codec import loopback
from app.kernel.settings import Settings
from contracts.common import InvalidInput
from contracts.features import (
    Expectation,
    Feature,
    FeaturesService,
    GetExpectations,
    PushRows,
    PutExpectations,
    PutFeatureView,
    Value,
)
from tests.integration.test_features_http import ago, client, put_users

__all__ = ["client"]  # the parametrised fixture, embedded and PostgreSQL + Redis

RULES = {
    "expectations": [
        {"feature": "age", "min": 0, "max": 120, "max_null_share": 0.5},
        {"feature": "city", "categories": ["Lyon", "Paris"]},
    ]
}


async def _push(client: httpx.AsyncClient, *rows: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/features/views/users/rows", json={"rows": list(rows)})


def _row(user: int, **values: Any) -> dict[str, Any]:
    return {"user_id": user, "event_timestamp": ago(hours=1), **values}


async def _online(client: httpx.AsyncClient, user: int) -> list[str]:
    answer = await client.post(
        "/v1/features/online", json={"features": ["users:age"], "entities": {"user_id": [user]}}
    )
    return list(answer.json()["results"][1]["statuses"])


async def test_a_push_breaking_an_expectation_is_refused_naming_row_and_feature(
    client: httpx.AsyncClient,
) -> None:
    await put_users(client)
    put = await client.put("/v1/features/views/users/expectations", json=RULES)
    assert put.status_code == 200, put.text
    assert put.json()["on_violation"] == "reject"

    answer = await _push(client, _row(1, age=30.0, city="Lyon"), _row(2, age=31.0, city="Berlin"))
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["details"]["row"] == 1
    assert error["details"]["field"] == "city"
    assert error["details"]["expectation"] == "category"
    assert "row 1, 'city'" in error["error"]
    assert await _online(client, 1) == ["NOT_FOUND"]  # nothing of the batch was written

    too_old = await _push(client, _row(3, age=130.0, city="Paris"))
    assert too_old.status_code == 400
    assert too_old.json()["details"] | {"violations": 1} == {
        "row": 0,
        "field": "age",
        "expectation": "range",
        "violations": 1,
    }

    fine = await _push(client, _row(4, age=40.0, city="Paris"), _row(5, city="Lyon"))
    assert fine.status_code == 200, fine.text
    assert fine.json()["violations"] == 0
    assert await _online(client, 4) == ["PRESENT"]


async def test_a_warned_push_is_written_counted_and_reported(client: httpx.AsyncClient) -> None:
    await put_users(client)
    rules = {**RULES, "on_violation": "warn", "fitted_from": "churn:3"}
    assert (await client.put("/v1/features/views/users/expectations", json=rules)).is_success

    answer = await _push(
        client, _row(1, age=-2.0, city="Lyon"), _row(2, city="Rome"), _row(3, city="Paris")
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["rows"] == 3
    assert body["violations"] == 3  # a range, a category, and age missing in 2 of 3 rows
    assert any(w.startswith("row 0, 'age'") for w in body["warnings"])
    assert any(w.startswith("row 1, 'city'") for w in body["warnings"])
    assert any("'age': missing in 2 of 3 rows" in w for w in body["warnings"])
    assert await _online(client, 1) == ["PRESENT"]

    kept = (await client.get("/v1/features/views/users/expectations")).json()
    assert kept["violations"] == 3
    assert kept["fitted_from"] == "churn:3"
    assert kept["on_violation"] == "warn"


async def test_expectations_naming_what_the_view_lacks_are_refused(
    client: httpx.AsyncClient,
) -> None:
    await put_users(client)
    path = "/v1/features/views/users/expectations"
    for rule, field in [
        ({"feature": "height", "min": 0}, "height"),
        ({"feature": "city", "min": 0}, "city"),
        ({"feature": "age", "min": 5, "max": 1}, "age"),
        ({"feature": "age", "dtype": "string"}, "age"),
    ]:
        answer = await client.put(path, json={"expectations": [rule]})
        assert answer.status_code == 400, (rule, answer.text)
        assert answer.json()["details"]["feature"] == field
    missing = await client.put("/v1/features/views/nope/expectations", json=RULES)
    assert missing.status_code == 404
    none = (await client.get(path)).json()
    assert none["expectations"] == []


async def test_an_int_expectation_on_a_float_feature_refuses_fractions(
    client: httpx.AsyncClient,
) -> None:
    await put_users(client)
    rules = {"expectations": [{"feature": "age", "dtype": "int", "categories": ["1", "2"]}]}
    assert (await client.put("/v1/features/views/users/expectations", json=rules)).is_success
    assert (await _push(client, _row(1, age=2.0))).status_code == 200
    fraction = await _push(client, _row(1, age=1.5))
    assert fraction.status_code == 400
    assert fraction.json()["details"]["expectation"] == "type"
    unseen = await _push(client, _row(1, age=3.0))
    assert unseen.json()["details"]["expectation"] == "category"


async def test_expectations_travel_the_wire_as_they_are(tmp_path: Path) -> None:
    async with Platform(Settings(data_dir=tmp_path, modules=("features",))) as platform:
        wire = loopback(FeaturesService, platform.client("features"))
        features = calls.bind(FeaturesService, wire, module="features", caller="tests")
        await features.put_view(
            PutFeatureView(
                name="users", entities=["user_id"], features=[Feature(name="age", dtype="float")]
            )
        )
        rules = [Expectation(feature="age", min=0, max=120)]
        put = await features.put_expectations(
            PutExpectations(view="users", expectations=rules, on_violation="warn")
        )
        assert put.expectations == rules
        row: dict[str, Value] = {"user_id": 1, "event_timestamp": ago(hours=1), "age": 200.0}
        pushed = await features.push(PushRows(view="users", rows=[row]))
        assert (pushed.violations, len(pushed.warnings)) == (1, 1)
        got = await features.get_expectations(GetExpectations(view="users"))
        assert (got.violations, got.on_violation) == (1, "warn")

        await features.put_expectations(PutExpectations(view="users", expectations=rules))
        with pytest.raises(InvalidInput) as refused:
            await features.push(PushRows(view="users", rows=[row]))
        assert refused.value.details["row"] == 0
        assert refused.value.details["field"] == "age"
