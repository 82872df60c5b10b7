"""A plug-in trainer whose self-made ONNX export disagrees with its native model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from app.modules.training.trainers import OnnxModel, TrainerRegistry, TrainingData, trainer
from app.modules.training.trees import random_forest_regressor

__all__ = ["forest_off_by_one"]


@trainer("forest_off_by_one", task="regression", hyperparameters={"n_estimators": 5})
def forest_off_by_one(data: TrainingData) -> tuple[OnnxModel, dict[str, float]]:
    """A random forest whose native predictions are 1 above what its export answers."""
    hyperparameters = TrainerRegistry.default().check_hyperparameters(
        "random_forest_regressor", dict(data.hyperparameters)
    )
    model, metrics = random_forest_regressor(replace(data, hyperparameters=hyperparameters))

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x)) + 1.0

    return OnnxModel(onnx=model.onnx, predict=predict), metrics
