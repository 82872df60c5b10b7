"""Drift tests: Evidently's default test per column kind and reference size, dataset drift,
the optional PSI and prediction drift."""

from __future__ import annotations

import numpy as np
import pytest

from app.modules.monitoring.drift import column_drift, dataset_drift, prediction_drift


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def _mix(rng: np.random.Generator, shares: list[float], size: int) -> np.ndarray:
    return rng.choice(np.arange(len(shares), dtype=np.float64), size=size, p=shares)


def test_small_numerical_column_uses_ks_and_detects_a_one_std_shift() -> None:
    rng = _rng()
    reference = rng.normal(10.0, 2.0, 500)

    shifted = column_drift("x", "numerical", reference, rng.normal(12.0, 2.0, 500))
    same = column_drift("x", "numerical", reference, rng.normal(10.0, 2.0, 500))

    assert shifted.test == "ks"
    assert shifted.drifted
    assert shifted.p_value is not None
    assert shifted.p_value <= 0.05
    assert shifted.threshold == 0.05
    assert not same.drifted
    assert same.p_value is not None
    assert same.p_value > 0.05
    assert (same.reference_rows, same.current_rows) == (500, 500)


def test_large_numerical_reference_uses_normalised_wasserstein() -> None:
    rng = _rng()
    reference = rng.normal(0.0, 3.0, 5000)

    shifted = column_drift("x", "numerical", reference, rng.normal(3.0, 3.0, 2000))
    same = column_drift("x", "numerical", reference, rng.normal(0.0, 3.0, 2000))

    assert shifted.test == "wasserstein_normed"
    assert shifted.p_value is None
    assert shifted.threshold == 0.1
    assert shifted.drifted
    assert shifted.statistic == pytest.approx(1.0, abs=0.1)  # a shift of one std
    assert not same.drifted
    assert same.statistic < 0.1


def test_constant_large_reference_is_not_divided_by_a_zero_std() -> None:
    reference = np.full(2000, 4.0)

    drift = column_drift("x", "numerical", reference, np.full(100, 4.5))

    assert drift.statistic == pytest.approx(0.5)
    assert drift.drifted


def test_small_categorical_column_uses_chisquare_on_the_mix() -> None:
    rng = _rng()
    reference = _mix(rng, [0.5, 0.3, 0.2], 500)
    # The reference's own values in another order: exactly the same mix.
    unchanged = rng.permutation(reference)

    changed = column_drift("c", "categorical", reference, _mix(rng, [0.2, 0.3, 0.5], 500))
    same = column_drift("c", "categorical", reference, unchanged)

    assert changed.test == "chisquare"
    assert changed.drifted
    assert not same.drifted
    assert same.p_value == pytest.approx(1.0)


def test_a_category_missing_from_the_reference_is_still_tested() -> None:
    reference = np.array([0.0, 1.0] * 100)
    current = np.array([0.0, 1.0, 2.0] * 50)

    drift = column_drift("c", "categorical", reference, current)

    assert np.isfinite(drift.statistic)
    assert drift.drifted


def test_large_categorical_reference_uses_jensen_shannon() -> None:
    rng = _rng()
    reference = _mix(rng, [0.5, 0.3, 0.2], 5000)

    changed = column_drift("c", "categorical", reference, _mix(rng, [0.2, 0.3, 0.5], 2000))
    same = column_drift("c", "categorical", reference, _mix(rng, [0.5, 0.3, 0.2], 2000))

    assert changed.test == "jensenshannon"
    assert changed.drifted
    assert 0.1 <= changed.statistic <= 1.0
    assert not same.drifted


def test_categories_compare_as_text() -> None:
    numbers = np.array([1.0, 2.0, 1.0, 2.0] * 20)
    text = np.array(["1", "2", "1", "2"] * 20, dtype=object)

    drift = column_drift("c", "categorical", numbers, text)

    assert not drift.drifted
    assert drift.statistic == pytest.approx(0.0)


def test_nans_are_dropped_per_column() -> None:
    rng = _rng()
    reference = rng.normal(size=300)
    current = np.concatenate([rng.normal(size=200), np.full(50, np.nan)])

    drift = column_drift("x", "numerical", reference, current)

    assert (drift.reference_rows, drift.current_rows) == (300, 200)


def test_an_empty_side_is_an_error() -> None:
    with pytest.raises(ValueError, match="no current values"):
        column_drift("x", "numerical", np.ones(10), np.array([np.nan]))


def test_dataset_drift_when_the_share_of_drifted_columns_reaches_the_threshold() -> None:
    rng = _rng()
    reference = rng.normal(size=(500, 4))
    current = rng.normal(size=(500, 4))
    current[:, :2] += 1.0
    columns = ["a", "b", "c", "d"]
    kinds = ["numerical"] * 4

    features, share, drift = dataset_drift(reference, current, columns, kinds)
    _, _, strict = dataset_drift(reference, current, columns, kinds, share_threshold=0.75)

    assert [f.name for f in features if f.drifted] == ["a", "b"]
    assert share == 0.5
    assert drift
    assert not strict


def test_dataset_drift_mixes_kinds() -> None:
    rng = _rng()
    reference = np.column_stack([rng.normal(size=400), _mix(rng, [0.7, 0.3], 400)])
    current = np.column_stack([rng.normal(size=300), _mix(rng, [0.3, 0.7], 300)])

    features, share, drift = dataset_drift(
        reference, current, ["x", "flag"], ["numerical", "categorical"]
    )

    assert [(f.name, f.test, f.drifted) for f in features] == [
        ("x", "ks", False),
        ("flag", "chisquare", True),
    ]
    assert share == 0.5
    assert drift


def test_psi_is_filled_only_when_asked() -> None:
    rng = _rng()
    reference = rng.normal(size=(500, 2))
    current = reference.copy()
    current[:, 1] = rng.integers(0, 3, 500)
    reference[:, 1] = rng.integers(0, 3, 500)
    kinds = ["numerical", "categorical"]

    plain, _, _ = dataset_drift(reference, current, ["x", "c"], kinds)
    with_psi, _, _ = dataset_drift(reference, current, ["x", "c"], kinds, psi=True)

    assert [f.psi for f in plain] == [None, None]
    assert with_psi[0].psi == pytest.approx(0.0, abs=1e-9)
    assert with_psi[1].psi is None
    assert [f.drifted for f in with_psi] == [f.drifted for f in plain]


def test_psi_grows_with_a_shift() -> None:
    rng = _rng()
    reference = rng.normal(size=2000)

    small = column_drift("x", "numerical", reference, rng.normal(0.1, 1.0, 2000), psi=True)
    large = column_drift("x", "numerical", reference, rng.normal(1.0, 1.0, 2000), psi=True)

    assert small.psi is not None
    assert large.psi is not None
    assert small.psi < 0.1 < large.psi


def test_classifier_prediction_drift_compares_the_predicted_class() -> None:
    rng = _rng()
    reference = {"probabilities": rng.dirichlet([4.0, 1.0, 1.0], 500)}
    shifted = {"probabilities": rng.dirichlet([1.0, 1.0, 4.0], 500)}

    drift = prediction_drift(reference, shifted)

    assert drift is not None
    assert (drift.name, drift.kind, drift.test) == ("prediction", "categorical", "chisquare")
    assert drift.drifted


def test_regressor_prediction_drift_compares_the_prediction() -> None:
    rng = _rng()
    reference = {"prediction": rng.normal(5.0, 1.0, 2000)}

    shifted = prediction_drift(reference, {"prediction": rng.normal(6.0, 1.0, 800)}, psi=True)
    same = prediction_drift(reference, {"prediction": rng.normal(5.0, 1.0, 800)})

    assert shifted is not None
    assert same is not None
    assert (shifted.kind, shifted.test) == ("numerical", "wasserstein_normed")
    assert shifted.drifted
    assert shifted.psi is not None
    assert not same.drifted


def test_no_prediction_drift_without_a_common_output() -> None:
    rng = _rng()

    assert prediction_drift({"prediction": rng.normal(size=10)}, {}) is None
    assert prediction_drift({"probabilities": np.ones((3, 2))}, {"prediction": np.ones(3)}) is None
