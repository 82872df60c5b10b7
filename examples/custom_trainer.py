"""A user-defined trainer: ridge regression solved in closed form with torch.

A trainer is a function ``fn(data: TrainingData) -> (torch.nn.Module, metrics)`` decorated with
``@trainer``. Quarry imports the modules named by ``QUARRY_TRAINERS`` (or by
``app.connect(training={"trainers": [...]})``) and the ``quarry.trainers`` entry points of
installed packages; a job then names the trainer like a built-in one. Serve it from the repository
root with

    PYTHONPATH=. QUARRY_TRAINERS=examples.custom_trainer quarry serve

or run this file, which trains one model with it in-process and prints the registered version:

    python examples/custom_trainer.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from typing import TYPE_CHECKING

import numpy as np

import app
from app.modules.training.trainers import TrainingData, trainer
from contracts.registry import GetVersion
from contracts.training import Dataset, GetTrainingJob, SubmitTrainingJob, TrainingJobSpec

if TYPE_CHECKING:
    import torch

__all__ = ["ridge_regression"]


@trainer("ridge_regression", task="regression", hyperparameters={"alpha": 1.0})
def ridge_regression(data: TrainingData) -> tuple[torch.nn.Module, dict[str, float]]:
    """Linear regression with an L2 penalty ``alpha``, solved in closed form."""
    import torch  # inside the function: listing trainers works on hosts without torch

    alpha = data.hyperparameters["alpha"]
    assert isinstance(alpha, float)
    x = torch.as_tensor(data.x_train, dtype=torch.float64)
    y = torch.as_tensor(data.y_train, dtype=torch.float64).reshape(-1)
    x_mean, y_mean = x.mean(dim=0), y.mean()
    xc = x - x_mean
    # (X'X + alpha I) w = X'y on centred data; the intercept restores the means
    gram = xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, xc.T @ (y - y_mean))
    model = torch.nn.Linear(x.shape[1], 1)
    with torch.no_grad():
        model.weight.copy_(weight.reshape(1, -1))
        model.bias.fill_(float(y_mean - x_mean @ weight))
    train_rmse = float(torch.sqrt(torch.mean((xc @ weight + y_mean - y) ** 2)))
    data.report(1, 1, {"train_rmse": train_rmse})
    return model, {"train_rmse": train_rmse}


def houses(count: int = 500) -> list[dict[str, float]]:
    """Generated house prices: size, rooms and age drive the price, plus noise."""
    rng = np.random.default_rng(3)
    size = rng.normal(120, 30, count)
    rooms = rng.integers(1, 7, count)
    age = rng.uniform(0, 60, count)
    price = 2.0 * size + 15 * rooms - 0.8 * age + rng.normal(0, 10, count)
    return [
        {"size": float(s), "rooms": float(r), "age": float(a), "price": float(p)}
        for s, r, a, p in zip(size, rooms, age, price, strict=True)
    ]


async def main(data_dir: str) -> None:
    settings = {"data_dir": data_dir, "log_level": "WARNING"}
    async with app.connect(training={"trainers": ["examples.custom_trainer"]}, **settings) as q:
        spec = TrainingJobSpec(
            trainer="ridge_regression",
            model="house_price",
            dataset=Dataset(rows=houses(), features=["size", "rooms", "age"], label="price"),
            hyperparameters={"alpha": 0.5},
            device="cpu",
        )
        job = await q.training.submit_job(SubmitTrainingJob(spec=spec))
        print(f"submitted job {job.id}: ridge_regression on 500 generated houses")
        while job.status in ("queued", "running"):
            await asyncio.sleep(0.2)
            job = await q.training.get_job(GetTrainingJob(id=job.id))
        if job.status != "succeeded":
            raise SystemExit(f"training {job.status}: {job.error}")
        version = await q.registry.get_version(GetVersion(ref=f"house_price:{job.version}"))
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in sorted(version.metrics.items()))
        print(f"registered house_price:{version.version}: {metrics}")


if __name__ == "__main__":
    # Run as a script, this file is ``__main__`` and its trainer is registered already; naming it
    # under its import path too lets ``trainers`` find this module instead of a second copy.
    sys.modules.setdefault("examples.custom_trainer", sys.modules[__name__])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="where Quarry keeps its data (default: a temp dir)")
    args = parser.parse_args()
    if args.data_dir:
        asyncio.run(main(args.data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="quarry-example-") as tmp:
            asyncio.run(main(tmp))
