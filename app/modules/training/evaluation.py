"""Validation metrics of a model's outputs, and the validation gate (MLflow's semantics).

numpy only. Classification metrics read the ``probabilities`` output (``[N, C]``) against class
ids ``0..C-1``; regression metrics read ``prediction`` (``[N]``) against the targets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from contracts.common import InvalidInput
from contracts.training import Gate, GateVerdict

__all__ = ["GREATER_IS_BETTER", "check_gate", "judge", "metric_names", "metrics"]

GREATER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "auc": True,
    "f1": True,
    "log_loss": False,
    "mae": False,
    "r2": True,
    "rmse": False,
}
"""Whether a higher value of each metric is the better one."""

_TASK_METRICS = {
    "classification": ["accuracy", "auc", "f1", "log_loss"],
    "regression": ["mae", "r2", "rmse"],
}
_EPS = 1e-15
_ZERO_BASELINE_MARGIN = 1e-10


def metric_names(task: str) -> list[str]:
    """The metrics :func:`metrics` computes for ``task``, sorted."""
    if task not in _TASK_METRICS:
        raise InvalidInput(f"unknown task {task!r}; expected classification or regression")
    return list(_TASK_METRICS[task])


def metrics(task: str, y_true: np.ndarray, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The validation metrics of ``outputs`` against ``y_true``.

    Classification: ``accuracy``, ``auc`` (binary ROC AUC; multiclass: the macro mean of the
    one-vs-rest AUCs; left out when no class has both positive and negative rows), ``log_loss``
    (natural log, probabilities clipped to ``[1e-15, 1 - 1e-15]``) and ``f1`` (binary: of class
    1; multiclass: the macro mean over the classes seen in ``y_true`` or predicted).
    Regression: ``rmse``, ``mae`` and ``r2``.
    """
    metric_names(task)
    key = "probabilities" if task == "classification" else "prediction"
    if key not in outputs:
        raise InvalidInput(f"{task} metrics need the {key!r} output; got {sorted(outputs)}")
    y = np.asarray(y_true)
    out = np.asarray(outputs[key], dtype=np.float64)
    if len(y) == 0 or len(out) != len(y):
        raise InvalidInput(f"{len(y)} labels for {len(out)} rows of {key!r}: need as many, >0")
    if task == "classification":
        return _classification(y.astype(np.int64), out)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 1:
        raise InvalidInput(f"prediction must be [N] or [N, 1], got {list(out.shape)}")
    return _regression(y.astype(np.float64), out)


def check_gate(gate: Gate, task: str) -> None:
    """``InvalidInput`` when ``gate`` names a metric that ``task`` does not compute, or sets a
    negative change."""
    names = metric_names(task)
    if gate.metric not in names:
        raise InvalidInput(
            f"unknown gate metric {gate.metric!r} for {task}; expected one of {', '.join(names)}",
            details={"field": "gate.metric"},
        )
    for field in ("min_absolute_change", "min_relative_change"):
        value = getattr(gate, field)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InvalidInput(
                f"gate {field} must be a number >= 0, got {value}",
                details={"field": f"gate.{field}"},
            )


def judge(
    gate: Gate,
    value: float,
    baseline_value: float | None,
    baseline_version: int | None,
    *,
    task: str | None = None,
) -> GateVerdict:
    """Apply ``gate`` to the candidate's ``value`` of ``gate.metric`` (MLflow's MetricThreshold).

    ``threshold``: ``value`` must be at least it (at most, for a lower-is-better metric).
    With a baseline value, ``value`` must also beat it in the better direction by at least
    ``min_absolute_change`` and by at least ``min_relative_change`` times ``|baseline|`` (a
    zero baseline: strictly better). Without one, only the threshold applies. ``task`` also
    checks the metric belongs to it.
    """
    if task is not None:
        check_gate(gate, task)
    if gate.metric not in GREATER_IS_BETTER:
        known = ", ".join(sorted(GREATER_IS_BETTER))
        raise InvalidInput(f"unknown gate metric {gate.metric!r}; expected one of {known}")
    higher = GREATER_IS_BETTER[gate.metric]
    sign = 1.0 if higher else -1.0
    name = gate.metric
    reasons: list[str] = []

    if gate.threshold is not None and not sign * (value - gate.threshold) >= 0:
        side = "below" if higher else "above"
        reasons.append(f"{name} {_num(value)} is {side} the threshold {_num(gate.threshold)}")

    if baseline_value is not None:
        gain = sign * (value - baseline_value)  # > 0: the candidate is better
        base = f"the baseline's {_num(baseline_value)}"
        if baseline_version is not None:
            base = f"the baseline's (version {baseline_version}) {_num(baseline_value)}"
        change = gate.min_absolute_change
        if change is not None and not gain >= change:
            reasons.append(f"{name} {_num(value)} does not beat {base} by at least {_num(change)}")
        share = gate.min_relative_change
        if share is not None:
            if baseline_value == 0:
                failed = not gain > _ZERO_BASELINE_MARGIN
            else:
                failed = not gain / abs(baseline_value) >= share
            if failed:
                reasons.append(
                    f"{name} {_num(value)} does not beat {base} by at least"
                    f" {_num(share * 100)}% of it"
                )

    return GateVerdict(
        passed=not reasons,
        metric=name,
        value=float(value),
        baseline_version=baseline_version if baseline_value is not None else None,
        baseline_value=None if baseline_value is None else float(baseline_value),
        reasons=reasons,
    )


# --- classification -------------------------------------------------------------------------


def _classification(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise InvalidInput(f"probabilities must be [N, C] with C >= 2, got {list(proba.shape)}")
    classes = proba.shape[1]
    if y.min() < 0 or y.max() >= classes:
        raise InvalidInput(f"class ids must lie in 0..{classes - 1}")
    predicted = proba.argmax(axis=1)
    clipped = np.clip(proba[np.arange(len(y)), y], _EPS, 1 - _EPS)
    result = {
        "accuracy": float(np.mean(predicted == y)),
        "log_loss": float(-np.mean(np.log(clipped))),
    }
    if classes == 2:
        result["f1"] = _f1(y == 1, predicted == 1)
        auc = _auc(y == 1, proba[:, 1])
    else:
        seen = np.union1d(y, predicted)
        result["f1"] = float(np.mean([_f1(y == c, predicted == c) for c in seen]))
        aucs = [_auc(y == c, proba[:, c]) for c in range(classes)]
        defined = [a for a in aucs if a is not None]
        auc = float(np.mean(defined)) if defined else None
    if auc is not None:
        result["auc"] = auc
    return dict(sorted(result.items()))


def _f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    true_positives = float(np.sum(truth & predicted))
    denominator = float(np.sum(truth) + np.sum(predicted))
    return 2 * true_positives / denominator if denominator else 0.0


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC by the Mann-Whitney U statistic, tied scores sharing their mean rank."""
    n_pos = int(np.sum(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(score)
    u = float(np.sum(ranks[positive])) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; equal values get the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # start of each run of equal values, and the mean rank of the run
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


# --- regression -----------------------------------------------------------------------------


def _regression(y: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    error = prediction - y
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    # a constant target: r2 is 1 for a perfect fit and 0 otherwise (as scikit-learn answers)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return {
        "mae": float(np.mean(np.abs(error))),
        "r2": float(r2),
        "rmse": math.sqrt(ss_res / len(y)),
    }


def _num(value: float) -> str:
    """A metric value as people read it: at most 4 significant digits."""
    return f"{value:.4g}"
