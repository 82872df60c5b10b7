"""Performance estimated without labels (CBPE) against the quality the labels later show."""

from __future__ import annotations

import numpy as np
import pytest

from app.modules.monitoring import cbpe, figures


def _logistic_windows(
    seed: int, windows: int = 10, rows: int = 500
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A logistic model whose probabilities ARE the truth; its inputs drift window by window
    toward the decision boundary (and past it), so its quality falls. Answers, per window,
    the served probabilities and the labels that arrive later."""
    rng = np.random.default_rng(seed)
    weights = np.array([2.0, -1.5, 1.0])
    out = []
    for w in range(windows):
        centre = np.array([1.5, -1.0, 0.5]) * (1 - w / (windows - 1))  # shifts toward 0
        x = rng.normal(size=(rows, 3)) * (1 - 0.06 * w) + centre
        p1 = 1 / (1 + np.exp(-(x @ weights - 0.5)))
        labels = (rng.random(rows) < p1).astype(int)
        out.append((np.column_stack([1 - p1, p1]), labels))
    return out


def test_estimated_accuracy_tracks_the_realised_within_its_band() -> None:
    windows = _logistic_windows(seed=7)
    within = {"accuracy": 0, "f1": 0, "auc": 0}
    estimated_accuracy = []
    for probabilities, labels in windows:
        metrics, lower, upper = cbpe.estimate(probabilities)
        realised, _ = figures.classification_metrics(labels, probabilities, 1.0, 1.0)
        for name in within:
            within[name] += lower[name] <= realised[name] <= upper[name]
        estimated_accuracy.append(metrics["accuracy"])

    assert within["accuracy"] >= 9
    assert within["f1"] >= 9
    assert within["auc"] >= 9
    # the shift is visible in the estimate: quality falls from the first window to the last
    assert estimated_accuracy[0] - estimated_accuracy[-1] > 0.1


def test_the_band_is_narrow_enough_to_tell_windows_apart() -> None:
    (first, _), *_, (last, _) = _logistic_windows(seed=3)
    _, _, upper_last = cbpe.estimate(last)
    _, lower_first, _ = cbpe.estimate(first)
    assert upper_last["accuracy"] < lower_first["accuracy"]


def test_expected_auc_matches_the_mean_over_drawn_labels() -> None:
    rng = np.random.default_rng(0)
    score = np.round(rng.random(300), 2)  # with ties
    metrics, _, _ = cbpe.estimate(np.column_stack([1 - score, score]))
    draws = []
    for _ in range(2000):
        labels = (rng.random(300) < score).astype(int)
        realised, _ = figures.classification_metrics(
            labels, np.column_stack([1 - score, score]), 1, 1
        )
        draws.append(realised["auc"])
    assert metrics["auc"] == pytest.approx(np.mean(draws), abs=0.005)


def test_multiclass_gets_accuracy_and_macro_f1() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(400, 3)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in p])
    metrics, lower, upper = cbpe.estimate(p)
    realised, _ = figures.classification_metrics(labels, p, 1, 1)
    assert set(metrics) == {"accuracy", "f1"}
    assert lower["accuracy"] <= realised["accuracy"] <= upper["accuracy"]
    assert lower["f1"] <= realised["f1"] <= upper["f1"]


def test_calibration_error_tells_calibrated_from_overconfident() -> None:
    *_, (probabilities, labels) = _logistic_windows(seed=5, rows=4000)  # the least sure
    overconfident = np.where(probabilities > 0.5, 0.99, 0.01)
    assert cbpe.calibration_error(probabilities, labels) < 0.05
    assert cbpe.calibration_error(overconfident, labels) > 0.1


def test_rows_that_are_not_numbers_are_left_out() -> None:
    p = np.array([[0.9, 0.1], [np.nan, 0.5], [0.2, np.inf], [0.3, 0.7]])
    metrics, _, _ = cbpe.estimate(p)
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert cbpe.calibration_error(p, np.array([0, 1, 1, 1])) == pytest.approx(0.2)


def test_only_probabilities_are_estimated_from() -> None:
    assert cbpe.are_probabilities(np.array([[0.2, 0.8], [1.0, 0.0]]))
    assert not cbpe.are_probabilities(np.array([[0.2, 0.9]]))  # sums to 1.1
    assert not cbpe.are_probabilities(np.array([[-1.5, 2.5]]))  # scores
    assert not cbpe.are_probabilities(np.empty((0, 2)))
