"""Feature transforms: what fit learns, what apply computes, and the errors a user sees."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from app.modules.features import transforms
from contracts.common import InvalidInput
from contracts.features import (
    Bucketize,
    Clip,
    Derived,
    FeatureDType,
    FillMissing,
    Log1p,
    MinMax,
    OneHot,
    Standardize,
    Transform,
    TransformState,
    Value,
)

DTYPES: dict[str, FeatureDType] = {
    "u:age": "float",
    "u:visits": "int",
    "u:vip": "bool",
    "u:country": "string",
    "u:embedding": "float_vector",
}
AGES: list[Value] = [20.0, None, 40.0, 30.0, 50.0]


def fit_one(transform: Transform, values: list[Value], ref: str = "u:age") -> dict[str, Value]:
    params, _ = transforms.fit([ref], [transform], DTYPES, {ref: values})
    return params[0]


def run(
    features: list[str], steps: list[Transform], train: dict[str, list[Value]]
) -> tuple[list[str], np.ndarray]:
    """Fit on ``train`` and apply to the same rows: the columns and values fit saw."""
    params, columns = transforms.fit(features, steps, DTYPES, train)
    return columns, transforms.apply(features, steps, DTYPES, params, columns, train)


# --- fitted statistics ----------------------------------------------------------------------


def test_standardize_fits_population_mean_and_std_ignoring_missing_values() -> None:
    known = np.array([20.0, 40.0, 30.0, 50.0])
    params = fit_one(Standardize(input="u:age"), AGES)

    assert params["mean"] == pytest.approx(known.mean())
    assert params["std"] == pytest.approx(known.std())
    _, values = run(["u:age"], [Standardize(input="u:age")], {"u:age": AGES})
    expected = (np.array([20.0, np.nan, 40.0, 30.0, 50.0]) - known.mean()) / known.std()
    np.testing.assert_allclose(values[:, 0], expected.astype(np.float32), rtol=1e-6)


def test_a_constant_column_standardizes_and_scales_by_one() -> None:
    assert fit_one(Standardize(input="u:age"), [3.0, 3.0])["std"] == 1.0
    _, values = run(["u:age"], [MinMax(input="u:age")], {"u:age": [3.0, 3.0]})
    assert values[:, 0].tolist() == [0.0, 0.0]


def test_min_max_scales_into_the_unit_interval() -> None:
    params = fit_one(MinMax(input="u:age"), AGES)
    _, values = run(["u:age"], [MinMax(input="u:age")], {"u:age": AGES})

    assert (params["min"], params["max"]) == (20.0, 50.0)
    np.testing.assert_allclose(values[:, 0], [0.0, np.nan, 2 / 3, 1 / 3, 1.0], rtol=1e-6)


def test_bucketize_fits_deduplicated_quantile_boundaries() -> None:
    values = [1.0, 2.0, 2.0, 2.0, 3.0, 10.0, None]
    params = fit_one(Bucketize(input="u:age", buckets=4), values)

    known = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 10.0])
    assert params["boundaries"] == np.unique(np.quantile(known, [0.25, 0.5, 0.75])).tolist()
    assert params["boundaries"] == [2.0, 2.75]


def test_bucketize_with_given_boundaries_counts_the_boundaries_at_or_below() -> None:
    step = Bucketize(input="u:age", boundaries=[25.0, 40.0])
    _, values = run(["u:age"], [step], {"u:age": [10.0, 25.0, 39.0, 40.0, 99.0, None]})
    assert values[:5, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]
    assert np.isnan(values[5, 0])


def test_one_hot_keeps_the_most_frequent_categories_sorted_as_strings() -> None:
    countries: list[Value] = ["us", "fr", "us", "de", "fr", "us", "it", None]
    params = fit_one(OneHot(input="u:country", max_categories=2), countries, ref="u:country")
    assert json.loads(str(params["categories"])) == ["fr", "us"]

    step = OneHot(input="u:country", max_categories=2)
    columns, values = run(["u:country"], [step], {"u:country": countries})
    assert columns == ["u:country=fr", "u:country=us"]
    assert values.tolist() == [[0, 1], [1, 0], [0, 1], [0, 0], [1, 0], [0, 1], [0, 0], [0, 0]]


def test_one_hot_of_ints_and_bools_labels_categories_as_text() -> None:
    steps: list[Transform] = [OneHot(input="u:visits"), OneHot(input="u:vip")]
    train: dict[str, list[Value]] = {
        "u:visits": [10, 2, 10, None],
        "u:vip": [True, False, None, True],
    }
    columns, values = run(["u:visits", "u:vip"], steps, train)

    assert columns == ["u:visits=10", "u:visits=2", "u:vip=false", "u:vip=true"]
    assert values.tolist() == [[1, 0, 0, 1], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize(
    ("strategy", "expected"), [("mean", 35.0), ("median", 35.0), ("mode", 20.0)]
)
def test_fill_missing_fits_its_strategy_on_known_values(strategy: str, expected: float) -> None:
    step = FillMissing(input="u:age", strategy=strategy)  # type: ignore[arg-type]
    assert fit_one(step, AGES)["value"] == expected
    _, values = run(["u:age"], [step], {"u:age": AGES})
    assert values[1, 0] == expected


def test_fill_missing_fills_strings_before_one_hot() -> None:
    steps: list[Transform] = [
        FillMissing(input="u:country", strategy="mode"),
        OneHot(input="u:country"),
    ]
    columns, values = run(["u:country"], steps, {"u:country": ["fr", None, "fr", "us"]})
    assert columns == ["u:country=fr", "u:country=us"]
    assert values[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_clip_and_log1p_and_derived_compute_what_they_say() -> None:
    steps: list[Transform] = [
        Clip(input="u:age", output="clipped", min=25.0, max=45.0),
        Log1p(input="u:visits"),
        Derived(output="per_year", expression="`u:visits` / `u:age` if `u:vip` else -1"),
    ]
    train: dict[str, list[Value]] = {
        "u:age": [20.0, 50.0],
        "u:visits": [3, 0],
        "u:vip": [True, False],
    }
    columns, values = run(["u:age", "u:visits", "u:vip"], steps, train)

    assert columns == ["u:age", "u:visits", "u:vip", "clipped", "per_year"]
    np.testing.assert_allclose(values[:, 3], [25.0, 45.0])
    np.testing.assert_allclose(values[:, 1], np.log1p([3.0, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(values[:, 4], [np.log1p(3.0) / 20.0, -1.0], rtol=1e-6)
    assert values[:, 2].tolist() == [1.0, 0.0]


# --- training split, serving, parity --------------------------------------------------------

SERVICE: list[str] = ["u:age", "u:country", "u:embedding"]
STEPS: list[Transform] = [
    FillMissing(input="u:age", strategy="median"),
    Standardize(input="u:age", output="age_z"),
    OneHot(input="u:country"),
    Derived(output="older", expression="`u:age` > 35"),
]
TRAIN: dict[str, list[Value]] = {
    "u:age": [20.0, None, 40.0, 60.0],
    "u:country": ["fr", "us", "fr", None],
    "u:embedding": [[1.0, 2.0], [3.0, 4.0], None, [5.0, 6.0]],
}


def test_columns_follow_features_then_outputs_with_one_hot_and_vectors_expanded() -> None:
    _, columns = transforms.fit(SERVICE, STEPS, DTYPES, TRAIN)
    assert columns == [
        "u:age",
        "u:country=fr",
        "u:country=us",
        "u:embedding[0]",
        "u:embedding[1]",
        "age_z",
        "older",
    ]


def test_one_hot_with_an_output_appends_its_columns_and_drops_the_string() -> None:
    steps: list[Transform] = [OneHot(input="u:country", output="country")]
    columns, _ = run(["u:country", "u:age"], steps, {"u:country": ["a"], "u:age": [1.0]})
    assert columns == ["u:age", "country=a"]


def test_apply_to_new_rows_uses_the_training_statistics() -> None:
    params, columns = transforms.fit(SERVICE, STEPS, DTYPES, TRAIN)
    rows: dict[str, list[Value]] = {
        "u:age": [None, 100.0],
        "u:country": ["de", "us"],
        "u:embedding": [[7.0, 8.0], None],
    }
    values = transforms.apply(SERVICE, STEPS, DTYPES, params, columns, rows)

    known = np.array([20.0, 40.0, 60.0, 40.0])  # the median 40 fills the missing age
    z = (np.array([40.0, 100.0]) - known.mean()) / known.std()
    assert values.dtype == np.float32
    assert values.shape == (2, 7)
    np.testing.assert_allclose(values[:, 5], z, rtol=1e-6)
    assert values[:, 0].tolist() == [40.0, 100.0]
    assert values[:, 1:3].tolist() == [[0.0, 0.0], [0.0, 1.0]]  # "de" was never seen
    assert values[0, 3:5].tolist() == [7.0, 8.0]
    assert np.isnan(values[1, 3:5]).all()
    assert values[:, 6].tolist() == [1.0, 1.0]


def test_row_at_a_time_equals_the_batch_and_the_state_survives_the_wire() -> None:
    params, columns = transforms.fit(SERVICE, STEPS, DTYPES, TRAIN)
    state = TransformState(
        id="s", service="svc", service_version=1, params=params, columns=columns, rows=4
    )
    wire = msgspec.json.decode(msgspec.json.encode(state), type=TransformState)

    batch = transforms.apply(SERVICE, STEPS, DTYPES, wire.params, wire.columns, TRAIN)
    online = [
        transforms.apply(
            SERVICE, STEPS, DTYPES, params, columns, {k: [v[i]] for k, v in TRAIN.items()}
        )
        for i in range(4)
    ]
    np.testing.assert_array_equal(np.vstack(online), batch)


def test_row_at_a_time_equals_the_batch_on_many_random_rows() -> None:
    generator = np.random.default_rng(7)
    ages: list[Value] = [float(value) for value in generator.normal(40, 12, 300)]
    ages[::17] = [None] * len(ages[::17])
    visits: list[Value] = [int(value) for value in generator.integers(0, 50, 300)]
    steps: list[Transform] = [
        Log1p(input="u:visits", output="log_visits"),
        Derived(output="mix", expression="exp(`u:age` / 50) * sqrt(`u:visits`) - log(`u:age`)"),
        Standardize(input="mix"),
        Bucketize(input="u:age", output="age_bucket", buckets=5),
        MinMax(input="u:age"),
    ]
    train = {"u:age": ages, "u:visits": visits}
    params, columns = transforms.fit(["u:age", "u:visits"], steps, DTYPES, train)

    batch = transforms.apply(["u:age", "u:visits"], steps, DTYPES, params, columns, train)
    online = [
        transforms.apply(
            ["u:age", "u:visits"], steps, DTYPES, params, columns, {"u:age": [a], "u:visits": [v]}
        )
        for a, v in zip(ages, visits, strict=True)
    ]
    np.testing.assert_array_equal(np.vstack(online), batch)


# --- errors ---------------------------------------------------------------------------------


def test_a_vector_of_the_wrong_length_names_the_feature_and_row() -> None:
    params, columns = transforms.fit(SERVICE, STEPS, DTYPES, TRAIN)
    rows = {**TRAIN, "u:embedding": [[1.0, 2.0], [1.0, 2.0, 3.0], None, None]}
    with pytest.raises(InvalidInput, match=r"feature 'u:embedding' row 1: a vector of 2 values"):
        transforms.apply(SERVICE, STEPS, DTYPES, params, columns, rows)


def test_log1p_below_minus_one_names_the_feature() -> None:
    params, columns = transforms.fit(["u:age"], [Log1p(input="u:age")], DTYPES, {"u:age": [1.0]})
    with pytest.raises(InvalidInput, match=r"transform 0 \(log1p\): log1p of 'u:age'.*row 1"):
        transforms.apply(
            ["u:age"], [Log1p(input="u:age")], DTYPES, params, columns, {"u:age": [0.0, -2.0]}
        )


@pytest.mark.parametrize("values", [[], [None, None]], ids=["zero rows", "all missing"])
def test_fitting_without_known_values_names_the_transform(values: list[Value]) -> None:
    steps: list[Transform] = [Clip(input="u:age", max=1.0), Standardize(input="u:age")]
    with pytest.raises(InvalidInput, match=r"transform 1 \(standardize\): input 'u:age' has no"):
        transforms.fit(["u:age"], steps, DTYPES, {"u:age": values})


def test_apply_refuses_params_of_other_transforms() -> None:
    params, columns = transforms.fit(["u:age"], [MinMax(input="u:age")], DTYPES, {"u:age": [1.0]})
    with pytest.raises(InvalidInput, match="does not match"):
        transforms.apply(
            ["u:age"], [Standardize(input="u:age")], DTYPES, params, columns, {"u:age": [1.0]}
        )


ONE_HOT = OneHot(input="u:country")
PLAN_ERRORS: list[tuple[list[Transform], str]] = [
    (
        [Standardize(input="u:country")],
        "transform 0 (standardize): input 'u:country' is a string feature",
    ),
    ([ONE_HOT, MinMax(input="u:nope")], "transform 1 (min_max): input 'u:nope' is not a feature"),
    (
        [ONE_HOT, Log1p(input="u:embedding")],
        "transform 1 (log1p): input 'u:embedding' is a float_vector feature",
    ),
    ([OneHot(input="u:age")], "transform 0 (one_hot): input 'u:age' is a float feature"),
    (
        [ONE_HOT, Standardize(input="u:country")],
        "transform 1 (standardize): input 'u:country' is a one-hot encoded output",
    ),
    (
        [ONE_HOT, Derived(output="x", expression="nope + 1")],
        "transform 1 (derived): expression 'nope + 1' references 'nope', which is not a feature",
    ),
    (
        [ONE_HOT, Derived(output="x", expression="a.b")],
        "transform 1 (derived): expression 'a.b': attribute access is not allowed",
    ),
    (
        [ONE_HOT, MinMax(input="u:age", output="u:visits")],
        "transform 1 (min_max): output 'u:visits' collides",
    ),
    (
        [ONE_HOT, Bucketize(input="u:age", boundaries=[2.0, 1.0])],
        "transform 1 (bucketize): boundaries must be strictly ascending",
    ),
    (
        [ONE_HOT, Bucketize(input="u:age", buckets=1)],
        "transform 1 (bucketize): buckets must be at least 2",
    ),
    (
        [ONE_HOT, Clip(input="u:age", min=2.0, max=1.0)],
        "transform 1 (clip): min 2.0 is above max 1.0",
    ),
    (
        [OneHot(input="u:country", max_categories=0)],
        "transform 0 (one_hot): max_categories must be at least 1",
    ),
    (
        [FillMissing(input="u:country", strategy="mean")],
        "transform 0 (fill_missing): strategy 'mean' needs a numeric input",
    ),
    ([ONE_HOT, FillMissing(input="u:age")], "transform 1 (fill_missing): needs a value"),
    ([], "string feature 'u:country' is not consumed by a one_hot transform"),
    (
        [FillMissing(input="u:country", output="c", value="x"), ONE_HOT],
        "string feature 'c' is not consumed",
    ),
]


@pytest.mark.parametrize(("steps", "message"), PLAN_ERRORS)
def test_plan_names_the_transform_and_the_problem(steps: list[Transform], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        transforms.plan(["u:age", "u:visits", "u:country", "u:embedding"], steps, DTYPES)
    assert message in caught.value.message


def test_plan_accepts_a_replacing_output_and_chained_outputs() -> None:
    steps: list[Transform] = [
        OneHot(input="u:country", output="country"),
        Standardize(input="u:age", output="u:age"),
        Derived(output="twice", expression="`u:age` * 2"),
        Bucketize(input="twice", output="bucket"),
        OneHot(input="bucket"),
    ]
    transforms.plan(["u:age", "u:country"], steps, DTYPES)
