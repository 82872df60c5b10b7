"""The tree-ensemble trainers in process: seeded, early stopping, exports that agree with their
libraries even at split thresholds, converter failures named, and cheap to list."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from app.modules.training.dataset import JobFailed
from app.modules.training.export import check_native_parity, run_onnx
from app.modules.training.trainers import OnnxModel, TrainerRegistry, TrainingData

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("sklearn")

TREES = [
    "xgboost_classifier",
    "xgboost_regressor",
    "lightgbm_classifier",
    "lightgbm_regressor",
    "random_forest_classifier",
    "random_forest_regressor",
]
Reports = list[tuple[int, int, dict[str, float]]]


@pytest.fixture(scope="module")
def registry() -> TrainerRegistry:
    registry = TrainerRegistry()
    registry.add_builtin()
    return registry


def make_data(
    registry: TrainerRegistry,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    reports: Reports | None = None,
    **hyperparameters: Any,
) -> TrainingData:
    cut = len(x) * 3 // 4
    log = reports if reports is not None else []
    classes = [f"c{i}" for i in range(int(y.max()) + 1)] if y.dtype == np.int64 else None
    return TrainingData(
        x_train=x[:cut],
        y_train=y[:cut],
        x_valid=x[cut:],
        y_valid=y[cut:],
        columns=[f"x{i}" for i in range(x.shape[1])],
        classes=classes,
        hyperparameters=registry.check_hyperparameters(name, hyperparameters),
        device="cpu",
        seed=seed,
        report=lambda epoch, epochs, m: log.append((epoch, epochs, m)),
    )


def rows_for(name: str, n: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    if name.endswith("classifier"):
        return x, (x @ rng.normal(size=(4, 3))).argmax(axis=1).astype(np.int64)
    return x, (2.0 * x[:, 0] + np.sin(x[:, 1])).astype(np.float32)


def fit(registry: TrainerRegistry, data: TrainingData, name: str) -> tuple[OnnxModel, Any]:
    model, metrics = registry.get(name).fn(data)
    assert isinstance(model, OnnxModel)
    return model, metrics


@pytest.mark.parametrize("name", TREES)
def test_the_same_seed_gives_the_same_model(registry: TrainerRegistry, name: str) -> None:
    x, y = rows_for(name)
    sampled: dict[str, Any] = (
        {"n_estimators": 10}
        if name.startswith("random_forest")
        else {"n_estimators": 10, "subsample": 0.7, "colsample_bytree": 0.5}
    )
    first, second, other = (
        fit(registry, make_data(registry, name, x, y, seed=seed, **sampled), name)[0]
        for seed in (3, 3, 4)
    )
    assert first.onnx == second.onnx
    np.testing.assert_array_equal(first.predict(x), second.predict(x))
    assert not np.array_equal(first.predict(x), other.predict(x))


@pytest.mark.parametrize("name", ["xgboost_classifier", "lightgbm_regressor"])
def test_boosting_stops_early_and_keeps_its_best_round(
    registry: TrainerRegistry, name: str
) -> None:
    x, _ = rows_for(name)
    noise = np.random.default_rng(5)
    y = (
        noise.integers(0, 2, len(x)).astype(np.int64)
        if name.endswith("classifier")
        else noise.normal(size=len(x)).astype(np.float32)
    )  # nothing to learn: the validation loss soon stops improving
    reports: Reports = []
    data = make_data(
        registry, name, x, y, reports=reports, n_estimators=500, early_stopping_rounds=5,
        learning_rate=0.3,
    )  # fmt: skip
    model, metrics = fit(registry, data, name)
    assert metrics["rounds"] < 500
    assert metrics["rounds"] - metrics["best_round"] == 5
    assert [r[0] for r in reports] == list(range(1, int(metrics["rounds"]) + 1))
    assert all(r[1] == 500 and set(r[2]) == {"valid_loss"} for r in reports)
    assert metrics["valid_loss"] == min(r[2]["valid_loss"] for r in reports)
    task = "classification" if name.endswith("classifier") else "regression"
    check_native_parity(model.onnx, model.predict, data.x_valid, task=task)


def test_a_forest_reports_as_it_grows(registry: TrainerRegistry) -> None:
    x, y = rows_for("random_forest_classifier")
    reports: Reports = []
    data = make_data(registry, "random_forest_classifier", x, y, reports=reports, n_estimators=25)
    _, metrics = fit(registry, data, "random_forest_classifier")
    assert [r[0] for r in reports] == [2, 5, 7, 10, 12, 15, 17, 20, 22, 25]
    assert metrics == {"trees": 25.0, "valid_loss": reports[-1][2]["valid_loss"]}


def test_lightgbm_exports_agree_at_split_thresholds(registry: TrainerRegistry) -> None:
    """Inputs one float32 step either side of every split answer as LightGBM does."""
    x, y = rows_for("lightgbm_regressor", n=400)
    data = make_data(registry, "lightgbm_regressor", x, y, n_estimators=30, min_child_samples=5)
    model, _ = fit(registry, data, "lightgbm_regressor")
    import onnx

    graph = onnx.load_from_string(model.onnx).graph
    (ensemble,) = (n for n in graph.node if n.op_type == "TreeEnsembleRegressor")
    attributes = {a.name: a for a in ensemble.attribute}
    modes = list(attributes["nodes_modes"].strings)
    features = [
        f for f, m in zip(attributes["nodes_featureids"].ints, modes, strict=True) if m != b"LEAF"
    ]
    values = np.array(
        [v for v, m in zip(attributes["nodes_values"].floats, modes, strict=True) if m != b"LEAF"],
        dtype=np.float32,
    )
    rows = np.repeat(x[:1], 3 * len(values), axis=0)
    for i, (feature, value) in enumerate(zip(features, values, strict=True)):
        for j, step in enumerate((-np.inf, 0.0, np.inf)):
            rows[3 * i + j, feature] = value if step == 0 else np.nextafter(value, np.float32(step))
    assert check_native_parity(model.onnx, model.predict, rows, task="regression") < 1e-3


def test_classifier_exports_name_their_classes_and_answer_probabilities(
    registry: TrainerRegistry,
) -> None:
    import onnx

    x, y = rows_for("xgboost_classifier")
    for name in ("xgboost_classifier", "lightgbm_classifier", "random_forest_classifier"):
        model, _ = fit(registry, make_data(registry, name, x, y, n_estimators=5), name)
        graph = onnx.load_from_string(model.onnx).graph
        assert [i.name for i in graph.input] == ["features"]
        assert [o.name for o in graph.output] == ["probabilities"]
        labels = [
            list(a.strings) for n in graph.node for a in n.attribute if a.name.startswith("classl")
        ]
        assert labels == [[b"c0", b"c1", b"c2"]], name
        outputs = run_onnx(model.onnx, x[:5])
        assert outputs["probabilities"].shape == (5, 3)


def test_a_converter_failure_is_named() -> None:
    from app.modules.training import tree_onnx

    with pytest.raises(JobFailed, match="converting the scikit-learn model to ONNX failed: "):
        tree_onnx.forest_onnx(object(), 3, task="regression", classes=None)


def test_a_class_the_forest_never_saw_is_named(registry: TrainerRegistry) -> None:
    x, y = rows_for("random_forest_classifier")
    y = y.copy()
    y[y == 2] = 0
    y[-1] = 2  # only in the validation rows
    data = make_data(registry, "random_forest_classifier", x, y, n_estimators=5)
    with pytest.raises(JobFailed, match="no training rows of class 'c2'"):
        registry.get("random_forest_classifier").fn(data)


def test_listing_trainers_imports_none_of_their_libraries() -> None:
    code = (
        "import sys, app.modules.training.trainers as t\n"
        "names = {i.name for i in t.TrainerRegistry.default().infos()}\n"
        "assert {'xgboost_regressor', 'random_forest_classifier'} <= names, names\n"
        "heavy = ('torch', 'xgboost', 'lightgbm', 'sklearn', 'onnxmltools', 'skl2onnx')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_only_the_tree_trainers_do_without_torch(registry: TrainerRegistry) -> None:
    assert not any(registry.get(name).needs_torch for name in TREES)
    assert registry.get("mlp_classifier").needs_torch
