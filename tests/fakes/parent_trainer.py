"""A trainer that tells which process started its training process: ``parent_pid`` fits one
linear layer and reports its parent's pid among its training metrics."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from app.modules.training.trainers import TrainingData, trainer
from tests.fakes import trainers as fakes  # the module, so its tiny_linear is not collected here

if TYPE_CHECKING:
    import torch

__all__ = ["parent_pid"]


@trainer("parent_pid", task="regression", hyperparameters={"epochs": 1})
def parent_pid(data: TrainingData) -> tuple[torch.nn.Module, dict[str, float]]:
    """``tiny_linear``, whose metrics name ``parent_pid``: the process that started this one."""
    model, metrics = fakes.tiny_linear(data)
    return model, {**metrics, "parent_pid": float(os.getppid())}
