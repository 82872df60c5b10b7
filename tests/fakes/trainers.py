"""A user's trainer module, the way a plug-in package writes one: ``tiny_linear`` fits one
linear layer by least squares with plain SGD."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.modules.training.trainers import TrainingData, trainer

if TYPE_CHECKING:
    import torch

__all__ = ["tiny_linear"]


@trainer("tiny_linear", task="regression", hyperparameters={"epochs": 5})
def tiny_linear(data: TrainingData) -> tuple[torch.nn.Module, dict[str, float]]:
    """One linear layer fitted with full-batch SGD.

    The second line is not part of the description.
    """
    import torch

    torch.manual_seed(data.seed)
    epochs = data.hyperparameters["epochs"]
    assert isinstance(epochs, int)
    model = torch.nn.Linear(data.x_train.shape[1], 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.as_tensor(data.x_train)
    y = torch.as_tensor(data.y_train).reshape(-1, 1)
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        data.report(epoch, epochs, {"train_loss": float(loss.item())})
    return model, {"epochs": float(epochs)}
