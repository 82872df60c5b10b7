"""Validation metrics against values worked out by hand, and the gate's MLflow semantics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from app.modules.training.evaluation import GREATER_IS_BETTER, judge, metric_names, metrics
from contracts.common import InvalidInput
from contracts.training import Gate


def binary(scores: list[float]) -> dict[str, np.ndarray]:
    p = np.array(scores)
    return {"probabilities": np.stack([1 - p, p], axis=1)}


def pair_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUC by counting every (positive, negative) pair: ties count one half."""
    wins = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(score[positive], score[~positive])
    ]
    return sum(wins) / len(wins)


# --- classification -------------------------------------------------------------------------


def test_binary_auc_averages_tied_scores() -> None:
    # positives 0.4, 0.8, 0.9 against negatives 0.1, 0.4, 0.4: 2 + 3 + 3 = 8 of 9 pairs
    got = metrics(
        "classification", np.array([0, 0, 1, 1, 0, 1]), binary([0.1, 0.4, 0.4, 0.8, 0.4, 0.9])
    )
    assert got["auc"] == pytest.approx(8 / 9)


def test_auc_matches_pair_counting_on_many_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = rng.integers(0, 5, 200) / 4  # five distinct scores: ties everywhere
    got = metrics("classification", y, binary(list(scores)))
    assert got["auc"] == pytest.approx(pair_auc(y == 1, scores))


def test_multiclass_auc_is_the_macro_mean_of_one_vs_rest() -> None:
    rng = np.random.default_rng(1)
    y = np.array([0, 1, 2] * 10)
    proba = rng.dirichlet([1, 1, 1], size=30)
    expected = np.mean([pair_auc(y == c, proba[:, c]) for c in range(3)])
    assert metrics("classification", y, {"probabilities": proba})["auc"] == pytest.approx(expected)


def test_log_loss_is_the_mean_negative_log_of_the_true_class() -> None:
    got = metrics("classification", np.array([1, 0]), binary([0.8, 0.3]))
    assert got["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)


def test_log_loss_clips_certain_mistakes() -> None:
    got = metrics("classification", np.array([1, 0]), binary([0.0, 0.0]))
    assert got["log_loss"] == pytest.approx(-(math.log(1e-15) + math.log(1 - 1e-15)) / 2)


def test_binary_accuracy_and_f1_of_class_one() -> None:
    # predicted 1, 0, 1, 0, 1 against 1, 1, 0, 0, 1: TP 2, FP 1, FN 1
    got = metrics("classification", np.array([1, 1, 0, 0, 1]), binary([0.9, 0.2, 0.7, 0.1, 0.6]))
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["f1"] == pytest.approx(2 / 3)


def test_multiclass_f1_is_the_macro_mean() -> None:
    # predicted 0, 2, 2, 1 against 0, 1, 2, 2: f1 of class 0 = 1, class 1 = 0, class 2 = 1/2
    proba = np.eye(3)[[0, 2, 2, 1]] * 0.8 + 0.2 / 3
    got = metrics("classification", np.array([0, 1, 2, 2]), {"probabilities": proba})
    assert got["f1"] == pytest.approx(0.5)
    assert got["accuracy"] == pytest.approx(0.5)
    assert sorted(got) == metric_names("classification")


def test_auc_is_left_out_when_only_one_class_is_present() -> None:
    got = metrics("classification", np.array([1, 1]), binary([0.8, 0.3]))
    assert "auc" not in got
    assert got["accuracy"] == 0.5


# --- regression -----------------------------------------------------------------------------


def test_regression_metrics() -> None:
    got = metrics(
        "regression", np.array([1.0, 2.0, 3.0, 4.0]), {"prediction": np.array([1, 2, 3, 5.0])}
    )
    # residuals 0, 0, 0, 1; the targets' sum of squares about their mean is 5
    assert got == pytest.approx({"rmse": 0.5, "mae": 0.25, "r2": 0.8})


def test_regression_accepts_a_column_of_predictions() -> None:
    got = metrics("regression", np.array([1.0, 3.0]), {"prediction": np.array([[1.0], [3.0]])})
    assert got["r2"] == 1.0


def test_missing_output_or_task_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="'prediction'"):
        metrics("regression", np.array([1.0]), {"probabilities": np.array([[0.5, 0.5]])})
    with pytest.raises(InvalidInput, match="unknown task 'ranking'"):
        metric_names("ranking")


# --- the gate -------------------------------------------------------------------------------


def test_threshold_for_a_higher_is_better_metric() -> None:
    verdict = judge(Gate(metric="accuracy", threshold=0.8), 0.71, None, None)
    assert not verdict.passed
    assert verdict.reasons == ["accuracy 0.71 is below the threshold 0.8"]
    assert judge(Gate(metric="accuracy", threshold=0.8), 0.8, None, None).passed


def test_threshold_for_a_lower_is_better_metric() -> None:
    verdict = judge(Gate(metric="rmse", threshold=1.0), 1.2, None, None)
    assert verdict.reasons == ["rmse 1.2 is above the threshold 1"]
    assert judge(Gate(metric="rmse", threshold=1.0), 0.9, None, None).passed
    assert not GREATER_IS_BETTER["log_loss"]
    assert GREATER_IS_BETTER["auc"]


def test_min_absolute_change_in_the_better_direction() -> None:
    higher = Gate(metric="accuracy", min_absolute_change=0.03)
    assert judge(higher, 0.85, 0.80, 3).passed
    failed = judge(higher, 0.82, 0.80, 3)
    assert not failed.passed
    assert failed.baseline_version == 3
    assert failed.baseline_value == 0.80
    assert failed.reasons == [
        "accuracy 0.82 does not beat the baseline's (version 3) 0.8 by at least 0.03"
    ]
    lower = Gate(metric="rmse", min_absolute_change=0.05)
    assert judge(lower, 0.9, 1.0, 1).passed
    assert not judge(lower, 0.98, 1.0, 1).passed
    assert not judge(lower, 1.1, 1.0, 1).passed


def test_min_relative_change_is_a_share_of_the_baseline() -> None:
    gate = Gate(metric="accuracy", min_relative_change=0.05)
    assert judge(gate, 0.88, 0.80, 1).passed  # +10%
    failed = judge(gate, 0.82, 0.80, 1)  # +2.5%
    assert failed.reasons == [
        "accuracy 0.82 does not beat the baseline's (version 1) 0.8 by at least 5% of it"
    ]
    lower = Gate(metric="log_loss", min_relative_change=0.1)
    assert judge(lower, 0.4, 0.5, 1).passed  # 20% lower
    assert not judge(lower, 0.48, 0.5, 1).passed


def test_min_relative_change_uses_the_size_of_a_negative_baseline() -> None:
    gate = Gate(metric="r2", min_relative_change=0.1)
    assert judge(gate, -0.4, -0.5, 1).passed  # better by 0.1 = 20% of |-0.5|
    assert not judge(gate, -0.6, -0.5, 1).passed


def test_zero_baseline_needs_a_strictly_better_candidate() -> None:
    gate = Gate(metric="r2", min_relative_change=0.5)
    assert not judge(gate, 0.0, 0.0, 1).passed
    assert judge(gate, 0.1, 0.0, 1).passed


def test_without_a_baseline_only_the_threshold_applies() -> None:
    gate = Gate(metric="auc", threshold=0.7, min_absolute_change=0.5, min_relative_change=0.5)
    verdict = judge(gate, 0.75, None, None)
    assert verdict.passed
    assert verdict.reasons == []
    assert verdict.baseline_value is None
    assert verdict.baseline_version is None


def test_every_failed_check_adds_a_reason() -> None:
    gate = Gate(metric="f1", threshold=0.9, min_absolute_change=0.1, min_relative_change=0.5)
    verdict = judge(gate, 0.5, 0.6, 2)
    assert not verdict.passed
    assert len(verdict.reasons) == 3
    assert verdict.value == 0.5


def test_unknown_gate_metric_lists_the_task_metrics() -> None:
    with pytest.raises(InvalidInput, match="expected one of mae, r2, rmse"):
        judge(Gate(metric="auc"), 0.9, None, None, task="regression")
    with pytest.raises(InvalidInput, match="unknown gate metric 'precision'"):
        judge(Gate(metric="precision"), 0.9, None, None)
