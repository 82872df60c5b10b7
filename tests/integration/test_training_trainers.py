"""Trainers end to end with torch: the built-ins learn, exports run in onnxruntime and match
torch, plug-ins are discovered, and hyperparameters are checked. Listing trainers needs no torch.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from app.modules.training.evaluation import metrics
from app.modules.training.trainers import TrainerRegistry, TrainingData, pick_device, trainer
from contracts.common import InvalidInput
from contracts.features import Value

Reports = list[tuple[int, int, dict[str, float]]]


@pytest.fixture(scope="module")
def torch() -> Iterator[Any]:
    torch = pytest.importorskip("torch")
    # tiny models train many times faster on one thread than on busy shared cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def registry() -> TrainerRegistry:
    registry = TrainerRegistry()
    registry.add_builtin()
    registry.discover(["tests.fakes.trainers"])
    return registry


def make_data(
    registry: TrainerRegistry,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    classes: list[str] | None = None,
    reports: Reports | None = None,
    report: Callable[[int, int, dict[str, float]], None] | None = None,
    **hyperparameters: Value,
) -> TrainingData:
    cut = len(x) * 3 // 4
    log = reports if reports is not None else []
    return TrainingData(
        x_train=x[:cut],
        y_train=y[:cut],
        x_valid=x[cut:],
        y_valid=y[cut:],
        columns=[f"x{i}" for i in range(x.shape[1])],
        classes=classes,
        hyperparameters=registry.check_hyperparameters(name, hyperparameters),
        device="cpu",
        seed=0,
        report=report or (lambda epoch, epochs, m: log.append((epoch, epochs, m))),
    )


def separable(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    weights = rng.normal(size=(4, classes))
    return x, (x @ weights).argmax(axis=1).astype(np.int64)


def linear(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x @ np.array([1.5, -2.0, 0.5, 1.0]) + 0.3).astype(np.float32)


def score(module: Any, data: TrainingData, task: str, torch: Any) -> dict[str, float]:
    with torch.no_grad():
        out = module(torch.from_numpy(data.x_valid))
    if task == "classification":
        return metrics(task, data.y_valid, {"probabilities": out.softmax(-1).numpy()})
    return metrics(task, data.y_valid, {"prediction": out.numpy()})


# --- the built-in trainers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_classifier(torch: Any, registry: TrainerRegistry) -> tuple[Any, TrainingData]:
    x, y = separable(600, 3)
    data = make_data(registry, "mlp_classifier", x, y, classes=["a", "b", "c"], epochs=25, lr=0.01)
    module, _ = registry.get("mlp_classifier").fn(data)
    return module, data


@pytest.fixture(scope="module")
def mlp_regressor(torch: Any, registry: TrainerRegistry) -> tuple[Any, TrainingData]:
    x, y = linear(600)
    data = make_data(registry, "mlp_regressor", x, y, epochs=40, lr=0.01)
    module, _ = registry.get("mlp_regressor").fn(data)
    return module, data


def test_logistic_regression_separates_two_classes(torch: Any, registry: TrainerRegistry) -> None:
    x, y = separable(400, 2)
    reports: Reports = []
    data = make_data(
        registry, "logistic_regression", x, y, classes=["no", "yes"], reports=reports, epochs=30
    )
    module, train_metrics = registry.get("logistic_regression").fn(data)
    assert score(module, data, "classification", torch)["accuracy"] > 0.9
    epochs_run = int(train_metrics["epochs"])
    assert [r[0] for r in reports] == list(range(1, epochs_run + 1))
    assert all(r[1] == 30 and set(r[2]) == {"train_loss", "valid_loss"} for r in reports)


def test_mlp_classifier_learns_three_classes(torch: Any, mlp_classifier: Any) -> None:
    module, data = mlp_classifier
    assert score(module, data, "classification", torch)["accuracy"] > 0.9


def test_mlp_regressor_fits_a_linear_target(torch: Any, mlp_regressor: Any) -> None:
    module, data = mlp_regressor
    assert score(module, data, "regression", torch)["r2"] > 0.9


def test_training_is_seeded(torch: Any, registry: TrainerRegistry) -> None:
    x, y = separable(200, 2)
    runs = [
        registry.get("mlp_classifier").fn(
            make_data(registry, "mlp_classifier", x, y, classes=["0", "1"], epochs=3, hidden=8)
        )[0]
        for _ in range(2)
    ]
    first, second = (run.state_dict() for run in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_early_stopping_stops_on_a_plateau(torch: Any, registry: TrainerRegistry) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    noise = rng.integers(0, 2, 200)  # labels with nothing to learn
    reports: Reports = []
    data = make_data(
        registry, "mlp_classifier", x, noise, classes=["0", "1"], reports=reports,
        epochs=200, patience=3, lr=0.01,
    )  # fmt: skip
    _, train_metrics = registry.get("mlp_classifier").fn(data)
    assert train_metrics["epochs"] < 200
    assert len(reports) == train_metrics["epochs"]
    assert train_metrics["epochs"] - train_metrics["best_epoch"] == 3
    best = min(r[2]["valid_loss"] for r in reports)
    assert train_metrics["valid_loss"] == pytest.approx(best)


def test_an_exception_from_report_stops_training(torch: Any, registry: TrainerRegistry) -> None:
    class Cancelled(Exception):
        pass

    def cancel(epoch: int, epochs: int, m: dict[str, float]) -> None:
        raise Cancelled

    x, y = linear(64)
    data = make_data(registry, "mlp_regressor", x, y, report=cancel)
    with pytest.raises(Cancelled):
        registry.get("mlp_regressor").fn(data)


# --- export and parity ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_onnx(mlp_classifier: Any) -> bytes:
    from app.modules.training.export import export_onnx

    module, _ = mlp_classifier
    return export_onnx(module, 4, task="classification")


def test_classification_export_answers_probabilities_for_any_batch(
    mlp_classifier: Any, classifier_onnx: bytes
) -> None:
    import onnxruntime as ort

    from app.modules.training.export import check_parity

    module, data = mlp_classifier
    session = ort.InferenceSession(classifier_onnx, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    for rows in (1, 37):
        (proba,) = session.run(None, {"features": data.x_valid[:rows]})
        assert proba.shape == (rows, 3)
        assert proba.dtype == np.float32
        assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert check_parity(classifier_onnx, module, data.x_valid, task="classification") < 1e-4


def test_regression_export_answers_one_prediction_per_row(
    torch: Any, registry: TrainerRegistry, mlp_regressor: Any
) -> None:
    import onnxruntime as ort

    from app.modules.training.export import check_parity, export_onnx

    x, y = linear(200)
    data = make_data(registry, "tiny_linear", x, y, epochs=3)
    tiny, _ = registry.get("tiny_linear").fn(data)  # a Linear: [N, 1] outputs
    module, valid = mlp_regressor  # a Sequential ending in Flatten: [N] outputs
    for model in (tiny, module):
        onnx_bytes = export_onnx(model, 4, task="regression", input_name="x")
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["prediction"]
        for rows in (1, 37):
            (prediction,) = session.run(None, {"x": valid.x_valid[:rows]})
            assert prediction.shape == (rows,)
        assert check_parity(onnx_bytes, model, valid.x_valid, task="regression") < 1e-3


def test_a_different_module_fails_parity(
    torch: Any, mlp_classifier: Any, classifier_onnx: bytes
) -> None:
    from app.modules.training.export import ParityError, check_parity

    module, data = mlp_classifier
    other = torch.nn.Linear(4, 3)
    with pytest.raises(ParityError, match="'probabilities' differs from torch by up to"):
        check_parity(classifier_onnx, other, data.x_valid, task="classification")
    assert module.training is False  # exporting left the trained module as it was


def test_a_regression_module_with_several_outputs_is_refused(torch: Any) -> None:
    from app.modules.training.export import export_onnx

    with pytest.raises(InvalidInput, match=r"\[N\] or \[N, 1\] predictions"):
        export_onnx(torch.nn.Linear(4, 2), 4, task="regression")


# --- discovery and listing ------------------------------------------------------------------


def test_a_user_trainer_module_is_discovered_and_listed(registry: TrainerRegistry) -> None:
    info = {i.name: i for i in registry.infos()}["tiny_linear"]
    assert info.task == "regression"
    assert info.hyperparameters == {"epochs": "int = 5"}
    assert info.description == "One linear layer fitted with full-batch SGD."
    assert not info.builtin
    names = [i.name for i in registry.infos()]
    assert names == sorted(names)
    assert {"logistic_regression", "mlp_classifier", "mlp_regressor"} <= set(names)
    assert all(i.builtin for i in registry.infos() if i.name != "tiny_linear")
    assert "tiny_linear" in [i.name for i in TrainerRegistry.default().infos()]


def test_entry_points_name_a_module_or_a_function(monkeypatch: pytest.MonkeyPatch) -> None:
    def points(name: str, value: str) -> Callable[..., list[importlib.metadata.EntryPoint]]:
        point = importlib.metadata.EntryPoint(name=name, value=value, group="quarry.trainers")
        return lambda group: [point] if group == "quarry.trainers" else []

    for value in ("tests.fakes.trainers", "tests.fakes.trainers:tiny_linear"):
        monkeypatch.setattr(importlib.metadata, "entry_points", points("tiny", value))
        fresh = TrainerRegistry()
        fresh.discover([])
        assert [i.name for i in fresh.infos()] == ["tiny_linear"]
    monkeypatch.setattr(importlib.metadata, "entry_points", points("broken", "tests.fakes:nope"))
    with pytest.raises(RuntimeError, match=re.escape("entry point 'broken' (tests.fakes:nope)")):
        TrainerRegistry().discover([])


def test_a_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"cannot import trainer module 'tests\.fakes\.missing'"):
        TrainerRegistry().discover(["tests.fakes.missing"])


def test_an_unknown_trainer_lists_the_known_ones(registry: TrainerRegistry) -> None:
    with pytest.raises(InvalidInput, match="unknown trainer 'catboost'; known trainers: light"):
        registry.get("catboost")


def test_a_second_function_cannot_take_a_registered_name() -> None:
    import tests.fakes.trainers  # noqa: F401  (registers tiny_linear)

    with pytest.raises(InvalidInput, match=r"'tiny_linear' is already registered by tests\.fakes"):

        @trainer("tiny_linear", task="regression")
        def impostor(data: TrainingData) -> Any:
            raise AssertionError


def test_listing_trainers_does_not_import_torch() -> None:
    code = (
        "import sys, app.modules.training.trainers as t\n"
        "assert len(t.TrainerRegistry.default().infos()) >= 3\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- hyperparameters and devices ------------------------------------------------------------


def test_hyperparameters_get_their_defaults(registry: TrainerRegistry) -> None:
    checked = registry.check_hyperparameters("mlp_classifier", {"lr": 1, "epochs": 7})
    assert checked["lr"] == 1.0
    assert isinstance(checked["lr"], float)
    assert checked["epochs"] == 7
    assert checked["hidden"] == 64
    assert set(checked) >= {"batch_size", "weight_decay", "patience", "layers", "dropout"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"lr": "fast"}, "hyperparameter 'lr' must be float, got str"),
        ({"epochs": True}, "hyperparameter 'epochs' must be int, got bool"),
        ({"lr": False}, "hyperparameter 'lr' must be float, got bool"),
        ({"epochs": 2.5}, "hyperparameter 'epochs' must be int, got float"),
        ({"epochs": None}, "hyperparameter 'epochs' must be int, got None"),
        ({"momentum": 0.9}, "unknown hyperparameter 'momentum' for trainer 'mlp_regressor';"
                            " accepted: batch_size, dropout, epochs, hidden, layers, lr"),
    ],
)  # fmt: skip
def test_hyperparameters_of_the_wrong_name_or_type_are_refused(
    registry: TrainerRegistry, given: dict[str, Value], message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        registry.check_hyperparameters("mlp_regressor", given)
    assert message in str(raised.value)


def test_pick_device(torch: Any) -> None:
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="'cuda'"):
            pick_device("cuda")
    with pytest.raises(InvalidInput, match="unknown device 'tpu'"):
        pick_device("tpu")
