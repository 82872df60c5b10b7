"""What every implementation of ``FeaturesService`` must do, whatever the transport.

Subclasses provide a ``features`` fixture. Names carry a random suffix so that one server can
serve every test of a class.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from contracts.common import InvalidInput, NotFound, UnprocessableInput
from contracts.features import (
    Bucketize,
    Derived,
    Feature,
    FeatureSource,
    FeaturesService,
    FillMissing,
    FitTransforms,
    GetFeatureView,
    GetHistoricalFeatures,
    GetMaterialization,
    GetOnlineFeatures,
    GetOnlineVectors,
    GetTransformState,
    ListFeatureViews,
    Materialize,
    OneHot,
    PushRows,
    PutFeatureService,
    PutFeatureView,
    Standardize,
    StreamRows,
    TransformRows,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def user_view(features: FeaturesService, *, ttl: int = 0, **extra: Any) -> str:
    name = unique("users")
    await features.put_view(
        PutFeatureView(
            name=name,
            entities=["user_id"],
            features=[
                Feature(name="age", dtype="float"),
                Feature(name="visits", dtype="int"),
                Feature(name="country", dtype="string"),
                Feature(name="premium", dtype="bool"),
            ],
            ttl_seconds=ttl,
            **extra,
        )
    )
    return name


def row(user: int, when: str, **values: Any) -> dict[str, Any]:
    return {"user_id": user, "event_timestamp": when, **values}


class FeaturesBehaviour:
    """The features contract, transport-independent."""

    async def test_materializing_needs_a_source_that_may_be_read(
        self, features: FeaturesService
    ) -> None:
        plain = await user_view(features)
        outside = FeatureSource(format="csv", path="/etc/passwd")

        with pytest.raises(InvalidInput, match="no source"):
            await features.materialize(Materialize(view=plain))
        with pytest.raises(NotFound):
            await features.materialize(Materialize(view=unique("nobody")))
        with pytest.raises(NotFound):
            await features.get_materialization(GetMaterialization(id="nothing"))
        with pytest.raises(InvalidInput, match="outside the source roots"):
            await user_view(features, source=outside)

    async def test_views_are_versioned_and_old_versions_stay_readable(
        self, features: FeaturesService
    ) -> None:
        name = unique("v")
        spec = PutFeatureView(
            name=name, entities=["id"], features=[Feature(name="x", dtype="float")]
        )
        first = await features.put_view(spec)
        again = await features.put_view(spec)
        changed = await features.put_view(
            PutFeatureView(
                name=name,
                entities=["id"],
                features=[Feature(name="x", dtype="float"), Feature(name="y", dtype="int")],
            )
        )
        assert (first.version, again.version, changed.version) == (1, 1, 2)
        old = await features.get_view(GetFeatureView(name=name, version=1))
        assert [f.name for f in old.features] == ["x"]
        latest = await features.get_view(GetFeatureView(name=name))
        assert latest.version == 2
        page = await features.list_views(ListFeatureViews(limit=500))
        assert any(v.name == name and v.version == 2 for v in page.items)

    async def test_a_view_answers_its_row_count_and_newest_event(
        self, features: FeaturesService
    ) -> None:
        view = await user_view(features)
        empty = await features.get_view(GetFeatureView(name=view))
        assert (empty.rows, empty.newest_event_at) == (0, None)
        rows = [row(1, ago(hours=2), age=1.0), row(1, ago(minutes=3), age=2.0)]
        await features.push(PushRows(view=view, rows=[*rows, row(2, ago(hours=1), age=3.0)]))
        await features.push(PushRows(view=view, rows=rows))  # the same rows again: no new rows
        await features.push(PushRows(view=view, rows=[row(3, ago(minutes=1))], to="online"))
        found = await features.get_view(GetFeatureView(name=view))
        assert found.rows == 3
        assert found.newest_event_at == NOW - timedelta(minutes=3)
        page = await features.list_views(ListFeatureViews(limit=500))
        listed = next(v for v in page.items if v.name == view)
        assert (listed.rows, listed.newest_event_at) == (None, None)

    async def test_bad_view_specs_are_refused(self, features: FeaturesService) -> None:
        with pytest.raises(InvalidInput, match="twice"):
            await features.put_view(
                PutFeatureView(
                    name=unique("v"),
                    entities=["id"],
                    features=[Feature(name="id", dtype="int")],
                )
            )
        with pytest.raises(InvalidInput, match="default"):
            await features.put_view(
                PutFeatureView(
                    name=unique("v"),
                    entities=["id"],
                    features=[Feature(name="x", dtype="int", default="seven")],
                )
            )
        with pytest.raises(NotFound):
            await features.get_view(GetFeatureView(name=unique("missing")))

    async def test_one_bad_row_rejects_the_whole_batch(self, features: FeaturesService) -> None:
        view = await user_view(features)
        rows = [row(1, ago(hours=1), age=30.0), row(2, ago(hours=1), age="old")]
        with pytest.raises(InvalidInput, match=r"row 1.*'age'"):
            await features.push(PushRows(view=view, rows=rows))
        online = await features.get_online(
            GetOnlineFeatures(features=[f"{view}:age"], entities={"user_id": [1]})
        )
        assert online.results[1].statuses == ["NOT_FOUND"]
        hist = await features.get_historical(
            GetHistoricalFeatures(features=[f"{view}:age"], entity_rows=[row(1, ago(minutes=1))])
        )
        assert hist.rows[0][f"{view}:age"] is None

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            ({"user_id": 1, "age": 1.0}, "event_timestamp is missing"),
            ({"event_timestamp": "2026-01-01T00:00:00Z", "age": 1.0}, "join key 'user_id'"),
            (row(1, "yesterday"), "ISO 8601"),
            ({"user_id": 1, "event_timestamp": 1e308}, "outside years"),
            (row(1, "2999-01-01T00:00:00Z"), "future"),
            (row(1, "2026-01-01T00:00:00Z", height=2.0), "'height' is not a feature"),
            (row(1, "2026-01-01T00:00:00Z", visits=1.5), "expected int"),
            ({"user_id": [1], "event_timestamp": "2026-01-01T00:00:00Z"}, "int or string"),
        ],
    )
    async def test_bad_rows_name_the_problem(
        self, features: FeaturesService, bad: dict[str, Any], message: str
    ) -> None:
        view = await user_view(features)
        with pytest.raises(InvalidInput, match=message):
            await features.push(PushRows(view=view, rows=[bad]))

    async def test_pushing_to_an_unknown_view_is_not_found(self, features: FeaturesService) -> None:
        with pytest.raises(NotFound):
            await features.push(PushRows(view=unique("nope"), rows=[row(1, ago(hours=1))]))

    async def test_online_read_is_column_oriented_with_statuses(
        self, features: FeaturesService
    ) -> None:
        view = await user_view(features, ttl=3600)
        await features.push(
            PushRows(
                view=view,
                rows=[
                    row(1, ago(minutes=5), age=31.0, visits=4, country="fr", premium=True),
                    row(2, ago(minutes=5), age=None, visits=1),
                    row(3, ago(hours=3), age=50.0),
                ],
            )
        )
        answer = await features.get_online(
            GetOnlineFeatures(
                features=[f"{view}:visits", f"{view}:age"], entities={"user_id": [1, 2, 3, 4]}
            )
        )
        assert answer.metadata.feature_names == ["user_id", f"{view}:visits", f"{view}:age"]
        keys, visits, age = answer.results
        assert keys.values == [1, 2, 3, 4]
        assert visits.values == [4, 1, None, None]
        assert age.values == [31.0, None, None, None]
        assert age.statuses == ["PRESENT", "NULL_VALUE", "OUTSIDE_MAX_AGE", "NOT_FOUND"]
        assert age.event_timestamps[0] == NOW - timedelta(minutes=5)
        assert age.event_timestamps[3] is None

    async def test_an_older_event_never_overwrites_a_newer_one_online(
        self, features: FeaturesService
    ) -> None:
        view = await user_view(features)
        await features.push(PushRows(view=view, rows=[row(1, ago(minutes=1), age=2.0)]))
        late = await features.push(PushRows(view=view, rows=[row(1, ago(hours=1), age=1.0)]))
        assert late.online_updated == 0
        again = await features.push(PushRows(view=view, rows=[row(1, ago(minutes=1), age=2.0)]))
        assert again.rows == 1
        answer = await features.get_online(
            GetOnlineFeatures(features=[f"{view}:age"], entities={"user_id": [1]})
        )
        assert answer.results[1].values == [2.0]

    async def test_historical_is_point_in_time_correct_including_backfills(
        self, features: FeaturesService
    ) -> None:
        view = await user_view(features, ttl=86400)
        await features.push(
            PushRows(
                view=view,
                rows=[
                    row(1, ago(days=3), age=1.0),
                    row(1, ago(days=1), age=3.0),
                    row(2, ago(days=3), age=5.0),
                ],
            )
        )
        # A late-arriving row for an earlier time, pushed after the newer ones.
        await features.push(PushRows(view=view, rows=[row(1, ago(days=2), age=2.0)]))
        entity_rows = [
            row(1, ago(days=1, minutes=1)),  # sees the backfilled value, not the later one
            row(1, ago(days=4)),  # before any value
            row(1, ago(minutes=1)),  # the latest
            row(1, ago(days=2)),  # exactly at the backfill's time: included
            row(9, ago(minutes=1)),  # unknown entity
            row(2, ago(days=2, hours=1)),  # 23 h after its only value: within the TTL
            row(2, ago(days=1)),  # 48 h after it: outside the TTL
        ]
        answer = await features.get_historical(
            GetHistoricalFeatures(features=[f"{view}:age"], entity_rows=entity_rows)
        )
        assert [r[f"{view}:age"] for r in answer.rows] == [2.0, None, 3.0, 2.0, None, 5.0, None]
        assert [r["event_timestamp"] for r in answer.rows] == [
            r["event_timestamp"] for r in entity_rows
        ]

    async def test_historical_streams_in_chunks_in_request_order(
        self, features: FeaturesService
    ) -> None:
        view = await user_view(features)
        await features.push(
            PushRows(view=view, rows=[row(u, ago(hours=2), visits=u) for u in range(25)])
        )
        entity_rows = [row(u, ago(hours=1)) for u in reversed(range(25))]
        chunks = [
            chunk
            async for chunk in features.stream_historical(
                GetHistoricalFeatures(
                    features=[f"{view}:visits"], entity_rows=entity_rows, chunk_rows=10
                )
            )
        ]
        assert [c.offset for c in chunks] == [0, 10, 20]
        values = [r[f"{view}:visits"] for c in chunks for r in c.rows]
        assert values == list(reversed(range(25)))

    async def test_bulk_ingest_reports_progress_per_chunk(self, features: FeaturesService) -> None:
        view = await user_view(features)
        rows = [row(u, ago(hours=1), visits=u) for u in range(45)]
        progress = [
            p.rows_done
            async for p in features.ingest(StreamRows(view=view, rows=rows, chunk_rows=20))
        ]
        assert progress == [20, 40, 45]
        answer = await features.get_online(
            GetOnlineFeatures(features=[f"{view}:visits"], entities={"user_id": [0, 44]})
        )
        assert answer.results[1].values == [0, 44]

    async def test_unknown_features_and_bad_entities_are_refused(
        self, features: FeaturesService
    ) -> None:
        view = await user_view(features)
        with pytest.raises(NotFound, match="no feature 'height'"):
            await features.get_online(
                GetOnlineFeatures(features=[f"{view}:height"], entities={"user_id": [1]})
            )
        with pytest.raises(InvalidInput, match="view:feature"):
            await features.get_online(
                GetOnlineFeatures(features=["age"], entities={"user_id": [1]})
            )
        with pytest.raises(InvalidInput, match="lack user_id"):
            await features.get_online(
                GetOnlineFeatures(features=[f"{view}:age"], entities={"uid": [1]})
            )
        with pytest.raises(InvalidInput, match="same number"):
            await features.get_online(
                GetOnlineFeatures(features=[f"{view}:age"], entities={"user_id": [1], "x": [1, 2]})
            )
        with pytest.raises(InvalidInput):
            await features.get_historical(
                GetHistoricalFeatures(features=[f"{view}:age"], entity_rows=[])
            )

    async def test_transforms_fit_on_the_split_and_agree_online_and_offline(
        self, features: FeaturesService
    ) -> None:
        view = await user_view(features)
        train = [
            row(u, ago(hours=2), age=20.0 + u, visits=u % 3, country="fr" if u % 2 else "de")
            for u in range(10)
        ]
        await features.push(PushRows(view=view, rows=train))
        service = unique("svc")
        await features.put_service(
            PutFeatureService(
                name=service,
                features=[f"{view}:age", f"{view}:visits", f"{view}:country"],
                transforms=[
                    Standardize(input=f"{view}:age"),
                    OneHot(input=f"{view}:country"),
                    Derived(
                        output="age_per_visit", expression=f"`{view}:age` / (`{view}:visits` + 1)"
                    ),
                ],
            )
        )
        # Fitted on users 0-7 only: users 8 and 9 play the validation split.
        state = await features.fit_transforms(
            FitTransforms(service=service, entity_rows=[row(u, ago(hours=1)) for u in range(8)])
        )
        assert state.rows == 8
        ages = np.array([20.0 + u for u in range(8)])
        stored = await features.get_transform_state(GetTransformState(id=state.id))
        assert stored.params[0]["mean"] == pytest.approx(ages.mean())
        assert stored.params[0]["std"] == pytest.approx(ages.std())

        online = await features.get_online_vectors(
            GetOnlineVectors(service=service, state=state.id, entities={"user_id": [8, 9]})
        )
        raw = [
            {f"{view}:age": 28.0, f"{view}:visits": 2, f"{view}:country": "de"},
            {f"{view}:age": 29.0, f"{view}:visits": 0, f"{view}:country": "fr"},
        ]
        offline = await features.transform_rows(TransformRows(state=state.id, rows=raw))
        assert online.columns == offline.columns == state.columns
        np.testing.assert_array_equal(online.values.to_numpy(), offline.values.to_numpy())
        age_column = state.columns.index(f"{view}:age")
        expected = (np.array([28.0, 29.0]) - ages.mean()) / ages.std()
        np.testing.assert_allclose(online.values.to_numpy()[:, age_column], expected, rtol=1e-5)

    async def test_missing_values_take_defaults_or_fail_as_the_feature_says(
        self, features: FeaturesService
    ) -> None:
        name = unique("acct")
        await features.put_view(
            PutFeatureView(
                name=name,
                entities=["user_id"],
                features=[
                    Feature(name="score", dtype="float", default=0.5),
                    Feature(name="limit", dtype="float", on_missing="error"),
                ],
            )
        )
        await features.push(PushRows(view=name, rows=[row(1, ago(hours=1), limit=10.0)]))
        service = unique("svc")
        await features.put_service(
            PutFeatureService(
                name=service,
                features=[f"{name}:score", f"{name}:limit"],
                transforms=[Bucketize(input=f"{name}:limit", boundaries=[5.0, 20.0])],
            )
        )
        await features.fit_transforms(
            FitTransforms(service=service, entity_rows=[row(1, ago(minutes=1))])
        )
        vectors = await features.get_online_vectors(
            GetOnlineVectors(service=service, entities={"user_id": [1]})
        )
        assert vectors.values.to_numpy().tolist() == [[0.5, 1.0]]
        with pytest.raises(UnprocessableInput, match=f"'{name}:limit'"):
            await features.get_online_vectors(
                GetOnlineVectors(service=service, entities={"user_id": [2]})
            )
        overridden = await features.get_online_vectors(
            GetOnlineVectors(
                service=service,
                entities={"user_id": [2]},
                overrides={f"{name}:limit": [30.0], f"{name}:score": [None]},
            )
        )
        assert overridden.values.to_numpy().tolist() == [[0.5, 2.0]]

    async def test_bad_services_name_the_transform(self, features: FeaturesService) -> None:
        view = await user_view(features)
        with pytest.raises(InvalidInput, match="transform 0"):
            await features.put_service(
                PutFeatureService(
                    name=unique("svc"),
                    features=[f"{view}:age", f"{view}:country"],
                    transforms=[Standardize(input=f"{view}:country")],
                )
            )
        with pytest.raises(InvalidInput):
            await features.put_service(
                PutFeatureService(
                    name=unique("svc"),
                    features=[f"{view}:age"],
                    transforms=[Derived(output="x", expression="__import__('os').getcwd()")],
                )
            )
        with pytest.raises(InvalidInput, match=r"one_hot|one-hot"):
            await features.put_service(
                PutFeatureService(
                    name=unique("svc"),
                    features=[f"{view}:country"],
                    transforms=[FillMissing(input=f"{view}:country", value="xx")],
                )
            )

    async def test_transforms_fit_on_raw_rows_too(self, features: FeaturesService) -> None:
        view = await user_view(features)
        service = unique("svc")
        await features.put_service(
            PutFeatureService(
                name=service,
                features=[f"{view}:age"],
                transforms=[Standardize(input=f"{view}:age")],
            )
        )
        rows = [{f"{view}:age": age} for age in (1.0, 2.0, 3.0, None)]
        state = await features.fit_transforms(FitTransforms(service=service, rows=rows))
        assert state.params[0]["mean"] == pytest.approx(2.0)
        with pytest.raises(InvalidInput, match="not both"):
            await features.fit_transforms(
                FitTransforms(service=service, rows=rows, entity_rows=[row(1, ago(hours=1))])
            )
