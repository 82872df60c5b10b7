"""Reference profiles: the seeded sample, and how each input column is described."""

from __future__ import annotations

import numpy as np
import pytest

from app.modules.training.profile import reference_profile
from contracts.common import InvalidInput

COLUMNS = ["onehot", "bucket", "amount"]


def training_rows(n: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            (np.arange(n) % 10 < 3).astype(np.float32),  # 30% ones
            rng.integers(0, 5, n).astype(np.float32),
            rng.normal(50, 10, n).astype(np.float32),
        ]
    )


def test_sample_is_seeded_without_replacement_and_matches_the_predictions() -> None:
    x = training_rows()
    x[:, 2] = np.arange(len(x))  # each row's index, to follow rows into the sample
    predictions = {"prediction": np.arange(len(x), dtype=np.float32) * 2}
    profile = reference_profile(COLUMNS, x, predictions, task="regression", seed=7, max_rows=50)
    sample = profile.sample.to_numpy()
    assert sample.shape == (50, 3)
    assert sample.dtype == np.float32
    picked = sample[:, 2].astype(int)
    assert len(set(picked)) == 50
    assert np.array_equal(profile.predictions["prediction"].to_numpy(), picked * 2.0)
    assert profile.rows == 200
    assert profile.task == "regression"
    again = reference_profile(COLUMNS, x, predictions, task="regression", seed=7, max_rows=50)
    other = reference_profile(COLUMNS, x, predictions, task="regression", seed=8, max_rows=50)
    assert np.array_equal(again.sample.to_numpy(), sample)
    assert not np.array_equal(other.sample.to_numpy(), sample)


def test_fewer_rows_than_max_rows_keeps_them_all() -> None:
    x = training_rows(20)
    profile = reference_profile(COLUMNS, x, {}, task=None, seed=0)
    assert np.array_equal(profile.sample.to_numpy(), x)
    assert profile.predictions == {}


def test_few_integer_values_are_categorical() -> None:
    profile = reference_profile(COLUMNS, training_rows(), {}, task=None, seed=0)
    onehot, bucket, amount = profile.profiles
    assert onehot.kind == "categorical"
    assert onehot.frequencies == pytest.approx({"0": 0.7, "1": 0.3})
    assert onehot.histogram is None
    assert bucket.kind == "categorical"
    assert set(bucket.frequencies) <= {"0", "1", "2", "3", "4"}
    assert sum(bucket.frequencies.values()) == pytest.approx(1.0)
    assert amount.kind == "numerical"
    assert amount.frequencies == {}


def test_numerical_columns_carry_histogram_mean_and_std() -> None:
    x = training_rows()
    amount = reference_profile(COLUMNS, x, {}, task=None, seed=0, bins=8).profiles[2]
    assert amount.histogram is not None
    assert len(amount.histogram.edges) == 9
    assert sum(amount.histogram.counts) == len(x)
    assert amount.histogram.edges[0] == pytest.approx(float(x[:, 2].min()))
    assert amount.histogram.edges[-1] == pytest.approx(float(x[:, 2].max()))
    assert amount.mean == pytest.approx(float(x[:, 2].mean()), rel=1e-5)
    assert amount.std == pytest.approx(float(x[:, 2].std()), rel=1e-5)


def test_eleven_distinct_integers_or_fractions_are_numerical() -> None:
    x = np.column_stack([np.arange(22) % 11, np.tile([0.5, 1.0], 11)]).astype(np.float32)
    wide, fractions = reference_profile(["ids", "halves"], x, {}, task=None, seed=0).profiles
    assert wide.kind == "numerical"
    assert fractions.kind == "numerical"


def test_missing_values_are_ignored() -> None:
    x = np.array([[1.0, 0.5], [np.nan, np.nan], [0.0, 2.5], [1.0, 1.5]], dtype=np.float32)
    flag, amount = reference_profile(["flag", "amount"], x, {}, task=None, seed=0).profiles
    assert flag.frequencies == pytest.approx({"0": 1 / 3, "1": 2 / 3})
    assert amount.histogram is not None
    assert sum(amount.histogram.counts) == 3
    assert amount.mean == pytest.approx(1.5)


def test_shapes_that_do_not_fit_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="for 2 columns"):
        reference_profile(["a", "b"], np.zeros((4, 3)), {}, task=None, seed=0)
    with pytest.raises(InvalidInput, match="prediction 'p' has 3 rows"):
        reference_profile(["a"], np.zeros((4, 1)), {"p": np.zeros(3)}, task=None, seed=0)
