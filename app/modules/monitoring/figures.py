"""The arithmetic of summaries and realised metrics (numpy only, no I/O).

What a model is comes from its version (the registry's ``task``) when it is known. Otherwise the
outputs say: ``probabilities`` (``[rows, classes]``) make a classifier, ``prediction`` a
regressor; else a float output of several columns makes a classifier. A classifier's class
probabilities are ``probabilities``, else its first float output of rank 2 (an exported
scikit-learn classifier answers ``output_label`` first, ``output_probability`` second), and
:func:`drift_outputs` hands it to prediction drift as ``probabilities``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from contracts.common import Tensor

__all__ = [
    "Task",
    "class_of",
    "classification_metrics",
    "drift_outputs",
    "latency_figures",
    "predicted",
    "prediction_distribution",
    "regression_metrics",
    "task_of",
]

Task = Literal["classification", "regression"]


def task_of(outputs: Mapping[str, Tensor], known: Task | None = None) -> Task | None:
    """Which kind of model produced ``outputs``: ``known`` (the version's task) when given,
    else what the outputs say (``None`` when there are none)."""
    if known is not None:
        return known
    if "probabilities" in outputs:
        return "classification"
    if "prediction" in outputs:
        return "regression"
    if not outputs:
        return None
    return "classification" if _probabilities(outputs) is not None else "regression"


def _probabilities(outputs: Mapping[str, Tensor]) -> Tensor | None:
    if "probabilities" in outputs:
        return outputs["probabilities"]
    floats = ("FP16", "FP32", "FP64")
    return next(
        (t for t in outputs.values() if t.dtype in floats and len(t.shape) == 2 and t.shape[1] > 1),
        None,
    )


def predicted(task: Task, outputs: Mapping[str, Tensor]) -> np.ndarray:
    """Per row: class probabilities ``[rows, classes]`` (classifier) or values ``[rows]``."""
    chosen = _probabilities(outputs) if task == "classification" else outputs.get("prediction")
    tensor = chosen or next(iter(outputs.values()))
    array = np.asarray(tensor.to_numpy(), dtype=np.float64)
    if task == "classification":
        return array.reshape(array.shape[0], -1)
    return array.reshape(array.shape[0], -1)[:, 0]


def drift_outputs(task: Task | None, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``outputs`` under the names prediction drift reads: a classifier's probabilities as
    ``probabilities`` (its first float output of rank 2, e.g. ``output_probability``), a
    regressor's values as ``prediction`` (its first float output), when not so named already."""
    named = dict(outputs)
    if "probabilities" in named or "prediction" in named or task is None:
        return named
    floats = [a for a in named.values() if np.asarray(a).dtype.kind == "f"]
    if task == "classification":
        chosen = next((a for a in floats if np.ndim(a) == 2 and np.shape(a)[1] > 1), None)
        return named | ({"probabilities": chosen} if chosen is not None else {})
    return named | ({"prediction": floats[0]} if floats else {})


def latency_figures(
    latencies: Sequence[float], statuses: Sequence[str], slo_s: float
) -> dict[str, Any]:
    """Counts, error rate, latency quantiles and SLO compliance of a window's records."""
    requests = len(latencies)
    errors = sum(1 for s in statuses if s != "ok")
    codes: dict[str, int] = {}
    for status in statuses:
        if status != "ok":
            codes[status] = codes.get(status, 0) + 1
    if not requests:
        return {"requests": 0, "errors": 0, "error_rate": 0.0, "errors_by_code": {}}
    values = np.asarray(latencies, dtype=np.float64)
    p50, p95, p99 = (float(v) for v in np.quantile(values, [0.5, 0.95, 0.99]))
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests,
        "latency_p50_s": p50,
        "latency_p95_s": p95,
        "latency_p99_s": p99,
        "slo_compliance": float(np.mean(values <= slo_s)),
        "errors_by_code": codes,
    }


def prediction_distribution(
    task: Task, outputs: Sequence[Mapping[str, Tensor]]
) -> tuple[dict[str, float], float | None]:
    """Class shares and mean confidence (classifier), or quantiles and mean (regressor)."""
    if not outputs:
        return {}, None
    arrays = [predicted(task, o) for o in outputs]
    if task == "classification":
        probabilities = np.concatenate(arrays, axis=0)
        classes = probabilities.argmax(axis=1)
        counts = np.bincount(classes, minlength=probabilities.shape[1])
        shares = {str(i): float(c / len(classes)) for i, c in enumerate(counts)}
        return shares, float(probabilities.max(axis=1).mean())
    values = np.concatenate(arrays)
    quantiles = np.quantile(values, [0.1, 0.5, 0.9])
    figures = {f"p{q}": float(v) for q, v in zip((10, 50, 90), quantiles, strict=True)}
    return figures | {"mean": float(values.mean())}, None


def class_of(label: Any, classes: Sequence[str] | None) -> int | None:
    """The class index of a fed-back label: by the version's class names, else as an integer."""
    text = _text(label)
    if classes:
        return classes.index(text) if text in classes else None
    try:
        return int(text)
    except ValueError:
        return None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def classification_metrics(
    truth: np.ndarray, probabilities: np.ndarray, cost_fp: float, cost_fn: float
) -> tuple[dict[str, float], float | None]:
    """Accuracy and F1 (macro over classes when there are more than two); for a binary
    classifier (class 1 is positive) also AUC, the confusion counts and the cost."""
    guess = probabilities.argmax(axis=1)
    figures = {"accuracy": float(np.mean(guess == truth))}
    if probabilities.shape[1] != 2:
        figures["f1"] = _macro_f1(truth, guess, probabilities.shape[1])
        return figures, None
    tp = int(np.sum((guess == 1) & (truth == 1)))
    fp = int(np.sum((guess == 1) & (truth == 0)))
    fn = int(np.sum((guess == 0) & (truth == 1)))
    tn = int(np.sum((guess == 0) & (truth == 0)))
    figures |= {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    figures["f1"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = _auc(truth, probabilities[:, 1])
    if auc is not None:
        figures["auc"] = auc
    return figures, fp * cost_fp + fn * cost_fn


def _macro_f1(truth: np.ndarray, guess: np.ndarray, classes: int) -> float:
    scores = []
    for c in range(classes):
        tp = float(np.sum((guess == c) & (truth == c)))
        fp = float(np.sum((guess == c) & (truth != c)))
        fn = float(np.sum((guess != c) & (truth == c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def _auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    positives, negatives = int(np.sum(truth == 1)), int(np.sum(truth == 0))
    if not positives or not negatives:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = ranks[truth == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def regression_metrics(truth: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R2."""
    error = values - truth
    figures = {
        "rmse": float(math.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
    }
    spread = float(np.sum((truth - truth.mean()) ** 2))
    if spread > 0:
        figures["r2"] = 1.0 - float(np.sum(error**2)) / spread
    return figures
