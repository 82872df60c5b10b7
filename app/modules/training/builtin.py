"""The trainers Quarry ships: logistic regression and small MLPs, written in torch.

torch is imported inside the functions only, so that importing this module (to list the trainers)
works on hosts without it; :func:`~app.modules.training.trainers.pick_device`, which a job calls
first, says how to install it where it is missing. Inputs arrive already transformed
(standardised, one-hot encoded) by the feature service, so the models take them as they are.

Every trainer uses mini-batch AdamW, shuffles with a generator seeded by ``data.seed``, reports
``train_loss`` and ``valid_loss`` after each epoch, stops early once the validation loss has not
improved for ``patience`` epochs (0: never) and returns the weights of its best epoch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from app.modules.training.trainers import TrainingData, trainer

if TYPE_CHECKING:
    import torch

__all__ = ["logistic_regression", "mlp_classifier", "mlp_regressor"]

_COMMON: dict[str, Any] = {
    "epochs": 50,
    "lr": 0.003,
    "batch_size": 64,
    "weight_decay": 0.0001,
    "patience": 10,
}
_MLP: dict[str, Any] = {**_COMMON, "hidden": 64, "layers": 2, "dropout": 0.1}
_EVAL_BATCH = 8192


@trainer(
    "logistic_regression",
    task="classification",
    hyperparameters={**_COMMON, "epochs": 100, "lr": 0.05, "batch_size": 128, "weight_decay": 0.0},
)
def logistic_regression(data: TrainingData) -> tuple[torch.nn.Module, dict[str, float]]:
    """Multinomial logistic regression: one linear layer trained with cross-entropy."""
    import torch

    torch.manual_seed(data.seed)
    model = torch.nn.Linear(data.x_train.shape[1], _class_count(data))
    return _fit(model, data, torch.nn.CrossEntropyLoss())


@trainer("mlp_classifier", task="classification", hyperparameters=_MLP)
def mlp_classifier(data: TrainingData) -> tuple[torch.nn.Module, dict[str, float]]:
    """A multi-layer perceptron (ReLU, dropout) trained with cross-entropy."""
    import torch

    torch.manual_seed(data.seed)
    model = _mlp(data, _class_count(data))
    return _fit(model, data, torch.nn.CrossEntropyLoss())


@trainer("mlp_regressor", task="regression", hyperparameters={**_MLP, "dropout": 0.0})
def mlp_regressor(data: TrainingData) -> tuple[torch.nn.Module, dict[str, float]]:
    """A multi-layer perceptron (ReLU, dropout) trained with mean squared error."""
    import torch

    torch.manual_seed(data.seed)
    # Flatten(0) turns the [N, 1] output into [N] predictions
    model = torch.nn.Sequential(_mlp(data, 1), torch.nn.Flatten(start_dim=0))
    return _fit(model, data, torch.nn.MSELoss())


def _class_count(data: TrainingData) -> int:
    if data.classes is not None:
        return len(data.classes)
    highest = max(int(y.max()) for y in (data.y_train, data.y_valid) if len(y))
    return highest + 1


def _mlp(data: TrainingData, outputs: int) -> torch.nn.Module:
    import torch

    hidden, layers = _int(data, "hidden"), _int(data, "layers")
    dropout = _float(data, "dropout")
    width = data.x_train.shape[1]
    parts: list[torch.nn.Module] = []
    for _ in range(layers):
        parts += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        if dropout > 0:
            parts.append(torch.nn.Dropout(dropout))
        width = hidden
    parts.append(torch.nn.Linear(width, outputs))
    return torch.nn.Sequential(*parts)


def _fit(
    model: torch.nn.Module, data: TrainingData, loss_fn: torch.nn.Module
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train ``model`` on ``data`` with early stopping; the best epoch's weights are kept."""
    import torch

    epochs, batch_size = _int(data, "epochs"), _int(data, "batch_size")
    patience = _int(data, "patience")
    device = torch.device(data.device)
    y_dtype = torch.float32 if isinstance(loss_fn, torch.nn.MSELoss) else torch.int64

    def tensors(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.as_tensor(x, dtype=torch.float32, device=device),
            torch.as_tensor(y, dtype=y_dtype, device=device),
        )

    x_train, y_train = tensors(data.x_train, data.y_train)
    x_valid, y_valid = tensors(data.x_valid, data.y_valid)
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=_float(data, "lr"),
        weight_decay=_float(data, "weight_decay"),
    )
    shuffle = torch.Generator().manual_seed(data.seed)
    n = len(x_train)
    best_loss, best_epoch, best_state = math.inf, 0, None
    train_loss = math.nan
    epoch = 0
    for epoch in range(1, epochs + 1):
        model.train()
        total = torch.zeros((), device=device)
        for batch in torch.split(torch.randperm(n, generator=shuffle).to(device), batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
        train_loss = float(total.item()) / max(n, 1)
        report = {"train_loss": train_loss}
        # without validation rows, early stopping watches the training loss
        watched = train_loss
        if len(x_valid):
            watched = report["valid_loss"] = _loss(model, loss_fn, x_valid, y_valid)
        data.report(epoch, epochs, report)
        if watched < best_loss:
            best_loss, best_epoch = watched, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif patience > 0 and epoch - best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    metrics = {"epochs": float(epoch), "best_epoch": float(best_epoch), "train_loss": train_loss}
    if len(x_valid):
        metrics["valid_loss"] = best_loss
    return model, metrics


def _loss(
    model: torch.nn.Module, loss_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> float:
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad():
        for xb, yb in zip(torch.split(x, _EVAL_BATCH), torch.split(y, _EVAL_BATCH), strict=True):
            total += float(loss_fn(model(xb), yb).item()) * len(xb)
    return total / len(x)


def _int(data: TrainingData, key: str) -> int:
    value = data.hyperparameters[key]
    assert isinstance(value, int)
    return value


def _float(data: TrainingData, key: str) -> float:
    value = data.hyperparameters[key]
    assert isinstance(value, int | float)
    return float(value)
