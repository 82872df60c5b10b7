"""The tree-ensemble trainers Quarry ships: gradient-boosted trees (XGBoost, LightGBM) and random
forests (scikit-learn).

Each fits with its library, exports the model to ONNX itself (``tree_onnx.py``) and answers an
:class:`~app.modules.training.trainers.OnnxModel`: the job checks the export against the native
model's predictions on held-out rows, as it does a torch module's. The libraries are imported
inside the functions only, so importing this module (to list the trainers) is cheap.

Boosting reports the validation loss (log loss, or RMSE for regression) after each round and,
unless ``early_stopping_rounds`` is 0, stops once it has not improved for that many rounds and
keeps the trees up to the best round. A forest grows in tenths, reporting the same loss after
each. Every trainer is seeded by ``data.seed`` and uses ``data.threads`` threads. Feature
importances are each column's share of the total split gain (boosting) or of the impurity
decrease (forests).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any, cast

import numpy as np

from app.modules.training import tree_onnx
from app.modules.training.dataset import JobFailed
from app.modules.training.evaluation import metrics
from app.modules.training.trainers import OnnxModel, TrainingData, trainer

__all__ = [
    "lightgbm_classifier",
    "lightgbm_regressor",
    "random_forest_classifier",
    "random_forest_regressor",
    "xgboost_classifier",
    "xgboost_regressor",
]

_BOOSTING: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.1,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "reg_alpha": 0.0,
    "early_stopping_rounds": 20,
}
_XGBOOST: dict[str, Any] = {**_BOOSTING, "max_depth": 6, "min_child_weight": 1.0, "reg_lambda": 1.0}
_LIGHTGBM: dict[str, Any] = {
    **_BOOSTING,
    "num_leaves": 31,
    "max_depth": 0,
    "min_child_samples": 20,
    "reg_lambda": 0.0,
}
_FOREST: dict[str, Any] = {
    "n_estimators": 100,
    "max_depth": 0,
    "min_samples_leaf": 1,
    "max_features": "sqrt",
    "bootstrap": True,
}
_FOREST_STEPS = 10
_XGBOOST_OBJECTIVES = {
    "regression": ("reg:squarederror", "rmse"),
    "binary": ("binary:logistic", "logloss"),
    "multiclass": ("multi:softprob", "mlogloss"),
}
_LIGHTGBM_OBJECTIVES = {
    "regression": ("regression", "rmse"),
    "binary": ("binary", "binary_logloss"),
    "multiclass": ("multiclass", "multi_logloss"),
}
"""The objective and validation metric (log loss or RMSE) of each kind of model."""


@trainer("xgboost_classifier", task="classification", hyperparameters=_XGBOOST)
def xgboost_classifier(data: TrainingData) -> tuple[OnnxModel, dict[str, float]]:
    """Gradient-boosted trees (XGBoost, hist) with log loss; early stopping on validation."""
    return _xgboost(data, classification=True)


@trainer("xgboost_regressor", task="regression", hyperparameters=_XGBOOST)
def xgboost_regressor(data: TrainingData) -> tuple[OnnxModel, dict[str, float]]:
    """Gradient-boosted trees (XGBoost, hist) with squared error; early stopping on validation."""
    return _xgboost(data, classification=False)


@trainer("lightgbm_classifier", task="classification", hyperparameters=_LIGHTGBM)
def lightgbm_classifier(data: TrainingData) -> tuple[OnnxModel, dict[str, float]]:
    """Gradient-boosted trees (LightGBM, leaf-wise) with log loss; early stopping on validation."""
    return _lightgbm(data, classification=True)


@trainer("lightgbm_regressor", task="regression", hyperparameters=_LIGHTGBM)
def lightgbm_regressor(data: TrainingData) -> tuple[OnnxModel, dict[str, float]]:
    """Gradient-boosted trees (LightGBM, leaf-wise) with squared error; early stopping on
    validation."""
    return _lightgbm(data, classification=False)


@trainer("random_forest_classifier", task="classification", hyperparameters=_FOREST)
def random_forest_classifier(data: TrainingData) -> tuple[OnnxModel, dict[str, float]]:
    """A random forest (scikit-learn) of Gini-split trees averaging class probabilities."""
    return _forest(data, classification=True)


@trainer(
    "random_forest_regressor",
    task="regression",
    hyperparameters={**_FOREST, "max_features": "all"},
)
def random_forest_regressor(data: TrainingData) -> tuple[OnnxModel, dict[str, float]]:
    """A random forest (scikit-learn) of squared-error trees averaging their predictions."""
    return _forest(data, classification=False)


# --- XGBoost --------------------------------------------------------------------------------


def _xgboost(data: TrainingData, *, classification: bool) -> tuple[OnnxModel, dict[str, float]]:
    import xgboost as xgb

    h = data.hyperparameters
    classes = _class_count(data) if classification else 0
    objective, metric = _XGBOOST_OBJECTIVES[_kind(classes)]
    params: dict[str, Any] = {
        "objective": objective,
        "eval_metric": metric,
        "tree_method": "hist",
        "eta": h["learning_rate"],
        "max_depth": h["max_depth"],
        "min_child_weight": h["min_child_weight"],
        "subsample": h["subsample"],
        "colsample_bytree": h["colsample_bytree"],
        "lambda": h["reg_lambda"],
        "alpha": h["reg_alpha"],
        "seed": data.seed,
        "nthread": data.threads,
        "verbosity": 0,
    }
    if classes > 2:
        params["num_class"] = classes
    rounds, patience = _int(h, "n_estimators"), _int(h, "early_stopping_rounds")
    losses: list[float] = []

    class Report(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            losses.append(float(evals_log["valid"][metric][-1]))
            data.report(epoch + 1, rounds, {"valid_loss": losses[-1]})
            return False

    booster = xgb.train(
        params,
        xgb.DMatrix(data.x_train, label=data.y_train, nthread=data.threads),
        num_boost_round=rounds,
        evals=[(xgb.DMatrix(data.x_valid, label=data.y_valid, nthread=data.threads), "valid")],
        early_stopping_rounds=patience or None,
        callbacks=[Report()],
        verbose_eval=False,
    )
    best = int(booster.best_iteration) + 1 if patience else booster.num_boosted_rounds()
    booster = booster[:best]  # the kept trees only: the native model and its export agree

    def predict(x: np.ndarray) -> np.ndarray:
        out = np.asarray(booster.inplace_predict(x))
        return np.stack([1 - out, out], axis=1) if classes == 2 else out

    gains = booster.get_score(importance_type="total_gain")
    importances = [cast(float, gains.get(f"f{i}", 0.0)) for i in range(len(data.columns))]
    task = "classification" if classification else "regression"
    onnx = tree_onnx.xgboost_onnx(booster, len(data.columns), task=task, classes=data.classes)
    model = _model(data, onnx, predict, importances, "xgboost")
    return model, _boosting_metrics(losses, best)


# --- LightGBM -------------------------------------------------------------------------------


def _lightgbm(data: TrainingData, *, classification: bool) -> tuple[OnnxModel, dict[str, float]]:
    import lightgbm as lgb

    h = data.hyperparameters
    classes = _class_count(data) if classification else 0
    objective, metric = _LIGHTGBM_OBJECTIVES[_kind(classes)]
    subsample = _float(h, "subsample")
    params: dict[str, Any] = {
        "objective": objective,
        "metric": metric,
        "learning_rate": h["learning_rate"],
        "num_leaves": h["num_leaves"],
        "max_depth": _int(h, "max_depth") or -1,
        "min_child_samples": h["min_child_samples"],
        "bagging_fraction": subsample,
        "bagging_freq": 1 if subsample < 1 else 0,
        "feature_fraction": h["colsample_bytree"],
        "lambda_l2": h["reg_lambda"],
        "lambda_l1": h["reg_alpha"],
        "seed": data.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": data.threads,
        "verbosity": -1,
    }
    if classes > 2:
        params["num_class"] = classes
    rounds, patience = _int(h, "n_estimators"), _int(h, "early_stopping_rounds")
    losses: list[float] = []

    def report(env: Any) -> None:
        losses.append(float(env.evaluation_result_list[0][2]))
        data.report(env.iteration + 1, rounds, {"valid_loss": losses[-1]})

    callbacks: list[Any] = [report]
    if patience:
        callbacks.append(lgb.early_stopping(patience, verbose=False))
    train = lgb.Dataset(data.x_train, label=data.y_train, params={"verbosity": -1})
    booster = lgb.train(
        params,
        train,
        num_boost_round=rounds,
        valid_sets=[lgb.Dataset(data.x_valid, label=data.y_valid, reference=train)],
        valid_names=["valid"],
        callbacks=callbacks,
    )
    # set by early stopping; the saved model (and so its export) ends there
    best = booster.best_iteration or booster.current_iteration()

    def predict(x: np.ndarray) -> np.ndarray:
        out = np.asarray(booster.predict(x, num_iteration=best))
        return np.stack([1 - out, out], axis=1) if classes == 2 else out

    importances = booster.feature_importance(importance_type="gain", iteration=best)
    task = "classification" if classification else "regression"
    onnx = tree_onnx.lightgbm_onnx(booster, len(data.columns), task=task, classes=data.classes)
    model = _model(data, onnx, predict, importances, "lightgbm")
    return model, _boosting_metrics(losses, best)


# --- scikit-learn forests -------------------------------------------------------------------


def _forest(data: TrainingData, *, classification: bool) -> tuple[OnnxModel, dict[str, float]]:
    from sklearn.ensemble import (  # type: ignore[import-untyped]
        RandomForestClassifier,
        RandomForestRegressor,
    )

    h = data.hyperparameters
    features = h["max_features"]
    model = (RandomForestClassifier if classification else RandomForestRegressor)(
        max_depth=_int(h, "max_depth") or None,
        min_samples_leaf=h["min_samples_leaf"],
        max_features=1.0 if features == "all" else features,
        bootstrap=h["bootstrap"],
        random_state=data.seed,
        n_jobs=data.threads,
        warm_start=True,  # grown in steps: the same trees as in one fit, with progress
    )
    trees = _int(h, "n_estimators")
    task = "classification" if classification else "regression"
    losses: list[float] = []
    steps = sorted({max(1, trees * i // _FOREST_STEPS) for i in range(1, _FOREST_STEPS + 1)})
    for grown in steps:
        model.set_params(n_estimators=grown)
        model.fit(data.x_train, data.y_train)
        if grown == steps[0] and classification:
            _check_classes_seen(data, model.classes_)
        predict = model.predict_proba if classification else model.predict
        losses.append(_valid_loss(task, data.y_valid, predict(data.x_valid)))
        data.report(grown, trees, {"valid_loss": losses[-1]})
    onnx = tree_onnx.forest_onnx(model, len(data.columns), task=task, classes=data.classes)
    exported = _model(data, onnx, predict, model.feature_importances_, "scikit-learn")
    return exported, {"trees": float(trees), "valid_loss": losses[-1]}


def _check_classes_seen(data: TrainingData, seen: np.ndarray) -> None:
    missing = sorted(set(range(_class_count(data))) - {int(c) for c in seen})
    if missing:
        names = [data.classes[i] if data.classes else str(i) for i in missing]
        raise JobFailed(
            f"no training rows of class {', '.join(map(repr, names))}: a random forest learns"
            " only the classes it sees; give more rows of it or another split seed"
        )


def _valid_loss(task: str, y: np.ndarray, out: np.ndarray) -> float:
    if task == "classification":
        return metrics(task, y, {"probabilities": out})["log_loss"]
    return metrics(task, y, {"prediction": out})["rmse"]


# --- shared ---------------------------------------------------------------------------------


def _model(
    data: TrainingData, onnx: bytes, predict: Any, importances: Any, library: str
) -> OnnxModel:
    """The exported model, its importances as shares of their total, and the versions of the
    libraries that made it."""
    values = np.asarray(importances, dtype=np.float64)
    total = float(values.sum())
    shares = values / total if total > 0 else values
    return OnnxModel(
        onnx=onnx,
        predict=predict,
        feature_importances=dict(zip(data.columns, map(float, shares), strict=True)),
        lineage=_versions(library, "onnxmltools" if library != "scikit-learn" else "skl2onnx"),
    )


def _boosting_metrics(losses: list[float], best: int) -> dict[str, float]:
    """Rounds run, the best round (whose trees are kept) and its validation loss."""
    found = {"rounds": float(len(losses)), "best_round": float(best)}
    if 0 < best <= len(losses):
        found["valid_loss"] = losses[best - 1]
    return found


def _versions(*libraries: str) -> Mapping[str, str]:
    found = {}
    for library in libraries:
        for dist in (library, f"{library}-cpu"):
            try:
                found[library] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def _kind(classes: int) -> str:
    """``regression`` (no classes), ``binary`` or ``multiclass``."""
    return "regression" if not classes else "binary" if classes == 2 else "multiclass"


def _class_count(data: TrainingData) -> int:
    if data.classes is not None:
        return len(data.classes)
    return max(int(y.max()) for y in (data.y_train, data.y_valid) if len(y)) + 1


def _int(hyperparameters: Mapping[str, Any], key: str) -> int:
    value = hyperparameters[key]
    assert isinstance(value, int)
    return value


def _float(hyperparameters: Mapping[str, Any], key: str) -> float:
    value = hyperparameters[key]
    assert isinstance(value, int | float)
    return float(value)
