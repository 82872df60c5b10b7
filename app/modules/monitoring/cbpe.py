"""Confidence-based performance estimation (CBPE, as NannyML publishes it): a classifier's
quality estimated from its probabilities alone (numpy only, no I/O).

When the probabilities are calibrated, row ``i`` is of class ``c`` with probability ``p[i, c]``.
The expected confusion counts follow from them, and with them accuracy, F1 and (binary) AUC,
before a single label arrives. The band around each figure is three standard errors of the
figure the labels would give, were they drawn from those probabilities: in closed form for
accuracy, from seeded draws of labels for F1 and AUC. The estimate is only as good as the
calibration, which :func:`calibration_error` measures where labels exist.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DRAWS", "SIGMAS", "Estimate", "are_probabilities", "calibration_error", "estimate"]

SIGMAS = 3.0
"""The band's half-width in standard errors."""
DRAWS = 200
"""Label draws behind the standard error of F1 and AUC."""

Estimate = tuple[dict[str, float], dict[str, float], dict[str, float]]
"""``(metrics, lower, upper)``."""


def estimate(probabilities: np.ndarray, *, seed: int = 0) -> Estimate:
    """Expected accuracy and F1 (macro beyond two classes; class 1 positive for two), and AUC for
    a binary classifier, of rows ``probabilities`` (``[rows, classes]``), with their bands."""
    p = _normalised(probabilities)
    if not len(p):
        return {}, {}, {}
    guess = p.argmax(axis=1)
    right = p[np.arange(len(p)), guess]
    metrics = {"accuracy": float(right.mean())}
    errors = {"accuracy": float(np.sqrt(np.sum(right * (1 - right))) / len(p))}
    labels = _draw(p, seed)
    if p.shape[1] == 2:
        metrics["f1"] = _expected_f1(p[:, 1], guess == 1)
        errors["f1"] = _spread(_f1(labels == 1, guess == 1))
        auc = _expected_auc(p[:, 1])
        if auc is not None:
            metrics["auc"] = auc
            errors["auc"] = _spread(_auc(labels == 1, p[:, 1]))
    else:
        metrics["f1"] = float(
            np.mean([_expected_f1(p[:, c], guess == c) for c in range(p.shape[1])])
        )
        errors["f1"] = _spread(
            np.mean([_f1(labels == c, guess == c) for c in range(p.shape[1])], axis=0)
        )
    lower = {k: max(0.0, v - SIGMAS * errors[k]) for k, v in metrics.items()}
    upper = {k: min(1.0, v + SIGMAS * errors[k]) for k, v in metrics.items()}
    return metrics, lower, upper


def are_probabilities(values: np.ndarray, tolerance: float = 1e-3) -> bool:
    """Whether every finite row of ``values`` (``[rows, classes]``) is a probability
    distribution: each value in [0, 1], each row summing to 1 within ``tolerance``. A model's
    scores, logits or regression outputs are not, and CBPE says nothing about them."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v).all(axis=1)] if v.ndim == 2 else v
    if v.ndim != 2 or not len(v):
        return False
    in_range = bool(np.all((v >= 0) & (v <= 1)))
    return in_range and bool(np.all(np.abs(v.sum(axis=1) - 1) <= tolerance))


def calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-class confidence: the row-weighted mean gap between
    confidence and accuracy over ``bins`` equal-width confidence bins."""
    finite = np.isfinite(np.asarray(probabilities, dtype=np.float64)).all(axis=1)
    p = _normalised(probabilities)
    if not len(p):
        return 0.0
    confidence = p.max(axis=1)
    right = (p.argmax(axis=1) == np.asarray(truth)[finite]).astype(np.float64)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in np.unique(which):
        inside = which == b
        gap += inside.sum() * abs(confidence[inside].mean() - right[inside].mean())
    return float(gap / len(p))


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """Rows as probabilities summing to one; rows holding a NaN or an infinity are left out."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = np.clip(p[np.isfinite(p).all(axis=1)], 0.0, None)
    total = p.sum(axis=1, keepdims=True)
    out = np.full_like(p, 1 / max(p.shape[1], 1))
    return np.asarray(np.divide(p, total, out=out, where=total > 0))


def _expected_f1(positive: np.ndarray, predicted: np.ndarray) -> float:
    tp = float(positive[predicted].sum())
    fp = float((1 - positive[predicted]).sum())
    fn = float(positive[~predicted].sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def _expected_auc(score: np.ndarray) -> float | None:
    """The AUC expected over labels drawn from ``score``: each positive-negative pair counts by
    the chance that the higher-scored row is the positive one (ties count half)."""
    positive, negative = score, 1 - score
    pairs = positive.sum() * negative.sum() - float(np.sum(positive * negative))
    if pairs <= 0:
        return None
    order = np.argsort(score, kind="mergesort")
    s, pos, neg = score[order], positive[order], negative[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    neg_by_value = np.add.reduceat(neg, starts)
    pos_by_value = np.add.reduceat(pos, starts)
    below = np.cumsum(neg_by_value) - neg_by_value
    tied = np.add.reduceat(pos * neg, starts)  # a row is not paired with itself
    won = float(np.sum(pos_by_value * below) + 0.5 * np.sum(pos_by_value * neg_by_value - tied))
    return won / float(pairs)


def _draw(p: np.ndarray, seed: int) -> np.ndarray:
    """``DRAWS`` label vectors drawn from the rows' probabilities: ``[DRAWS, rows]``."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(p, axis=1)
    cumulative[:, -1] = 1.0
    u = rng.random((DRAWS, len(p), 1))
    return np.asarray((u > cumulative[None, :, :]).sum(axis=2))


def _f1(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    tp = np.sum(truth & predicted, axis=1)
    fp = np.sum(~truth & predicted, axis=1)
    fn = np.sum(truth & ~predicted, axis=1)
    total = 2 * tp + fp + fn
    return np.asarray(np.divide(2 * tp, total, out=np.zeros(len(tp)), where=total > 0))


def _auc(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    ranks[order] = np.repeat((starts + ends - 1) / 2 + 1, ends - starts)  # ties share a rank
    positives = truth.sum(axis=1).astype(np.float64)
    negatives = truth.shape[1] - positives
    rank_sum = truth.astype(np.float64) @ ranks
    pairs = positives * negatives
    won = rank_sum - positives * (positives + 1) / 2
    return np.asarray(np.divide(won, pairs, out=np.full(len(pairs), np.nan), where=pairs > 0))


def _spread(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.std(finite)) if len(finite) > 1 else 0.0
