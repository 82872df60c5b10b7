"""A user's trainer that prints as it trains (what a job's log keeps): one plain line per
epoch, one far longer than a log line may be, and one with a carriage return and a bell."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.modules.training.trainers import TrainingData, trainer
from tests.fakes.trainers import tiny_linear

if TYPE_CHECKING:
    import torch

__all__ = ["LONG", "talkative"]

LONG = 5000
"""Characters of the long line."""


@trainer("talkative", task="regression", hyperparameters={"epochs": 3})
def talkative(data: TrainingData) -> tuple[torch.nn.Module, dict[str, float]]:
    """``tiny_linear``, printing as it goes."""
    epochs = data.hyperparameters["epochs"]
    print(f"talkative: fitting {len(data.x_train)} rows for {epochs} epochs")
    print("x" * LONG)
    print("carriage\rreturn\a bell")
    return tiny_linear(data)
