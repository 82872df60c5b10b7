"""The Quarry loop from Python, with the whole platform running in this process.

Defines a feature view and a feature service, pushes a generated data set, trains a built-in
trainer through the training contract, serves the model through a deployment, predicts by
entity, then shifts the data and runs a drift check. Run it from the repository root:

    python examples/in_process.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

import app
from contracts.features import Feature, PushRows, PutFeatureService, PutFeatureView, Standardize
from contracts.inference import Deployment, Predict, PutDeployment, Route
from contracts.monitoring import GetSummary, RunDriftCheck
from contracts.training import Dataset, GetTrainingJob, SubmitTrainingJob, TrainingJobSpec

CUSTOMERS = 500
FEATURES = ["customers:age", "customers:income", "customers:visits"]


def customers(rng: np.random.Generator, *, shifted: bool) -> list[dict[str, Any]]:
    """One row per customer; ``shifted`` lowers incomes and raises visits."""
    age = rng.normal(40, 10, CUSTOMERS)
    income = rng.lognormal(10.5, 0.4, CUSTOMERS) * (0.5 if shifted else 1.0)
    visits = rng.poisson(12 if shifted else 4, CUSTOMERS)
    score = 0.04 * (age - 40) + (np.log(income) - 10.5) + 0.3 * (visits - 4)
    bought = (score + rng.normal(0, 0.5, CUSTOMERS) > 0).astype(int)
    return [
        {
            "customer_id": i,
            "age": round(float(age[i]), 1),
            "income": round(float(income[i]), 2),
            "visits": int(visits[i]),
            "bought": int(bought[i]),
        }
        for i in range(CUSTOMERS)
    ]


async def push(q: app.Quarry, rows: list[dict[str, Any]], when: datetime) -> None:
    """Features to the ``customers`` view, labels to the ``outcomes`` view."""
    stamp = when.isoformat()
    features = [{k: v for k, v in r.items() if k != "bought"} for r in rows]
    outcomes = [{"customer_id": r["customer_id"], "bought": r["bought"]} for r in rows]
    await q.features.push(
        PushRows(view="customers", rows=[{**r, "event_timestamp": stamp} for r in features])
    )
    await q.features.push(
        PushRows(view="outcomes", rows=[{**r, "event_timestamp": stamp} for r in outcomes])
    )


async def define_features(q: app.Quarry) -> None:
    await q.features.put_view(
        PutFeatureView(
            name="customers",
            entities=["customer_id"],
            features=[
                Feature(name="age", dtype="float"),
                Feature(name="income", dtype="float"),
                Feature(name="visits", dtype="int", default=0),
            ],
        )
    )
    await q.features.put_view(
        PutFeatureView(
            name="outcomes",
            entities=["customer_id"],
            features=[Feature(name="bought", dtype="int")],
        )
    )
    await q.features.put_service(
        PutFeatureService(
            name="purchase",
            features=FEATURES,
            transforms=[Standardize(input=name) for name in FEATURES],
        )
    )


async def train(q: app.Quarry) -> int:
    """Submit a job, poll it until it ends, print its metrics; answers the registered version."""
    now = datetime.now(UTC).isoformat()
    spec = TrainingJobSpec(
        trainer="logistic_regression",
        model="purchase",
        dataset=Dataset(
            feature_service="purchase",
            entity_rows=[{"customer_id": i, "event_timestamp": now} for i in range(CUSTOMERS)],
            label="outcomes:bought",
        ),
        hyperparameters={"epochs": 30, "lr": 0.05},
        device="cpu",
    )
    job = await q.training.submit_job(SubmitTrainingJob(spec=spec))
    while job.status in ("queued", "running"):
        await asyncio.sleep(0.2)
        job = await q.training.get_job(GetTrainingJob(id=job.id))
    if job.status != "succeeded" or job.version is None:
        raise SystemExit(f"training {job.status}: {job.error}")
    metrics = ", ".join(f"{k} {job.metrics[k]:.3f}" for k in ("accuracy", "f1", "auc"))
    print(f"trained purchase:{job.version} with logistic_regression: {metrics}")
    return job.version


async def traffic(q: app.Quarry, count: int) -> None:
    for customer in range(count):
        request = Predict(model="purchase-live", entities={"customer_id": [customer]})
        await q.inference.predict(request)


async def run(q: app.Quarry) -> None:
    """The whole flow on ``q``; ``examples/remote.py`` runs it against a server."""
    rng = np.random.default_rng(7)
    await define_features(q)
    await push(q, customers(rng, shifted=False), datetime.now(UTC) - timedelta(days=1))
    print(f"pushed {CUSTOMERS} customers and their outcomes")

    version = await train(q)
    route = Route(model=f"purchase:{version}", weight=100)
    deployment = Deployment(name="purchase-live", routes=[route])
    await q.inference.put_deployment(PutDeployment(deployment=deployment))
    answer = await q.inference.predict(
        Predict(model="purchase-live", entities={"customer_id": [1, 2, 3]})
    )
    buy = answer.outputs["probabilities"].to_numpy()[:, 1]
    print(f"deployment purchase-live -> purchase:{answer.version}; P(buy) {buy.round(2)}")

    shifted_at = time.time()
    await push(q, customers(rng, shifted=True), datetime.now(UTC) - timedelta(seconds=5))
    await traffic(q, CUSTOMERS)
    print(f"pushed shifted values and sent {CUSTOMERS} predictions")

    ask = GetSummary(model="purchase", version=version)
    summary = await q.monitoring.get_summary(ask)
    while summary.requests < CUSTOMERS + 1:  # records reach monitoring in the background
        await asyncio.sleep(0.2)
        summary = await q.monitoring.get_summary(ask)
    window = time.time() - shifted_at + 1
    report = await q.monitoring.run_drift_check(
        RunDriftCheck(model=f"purchase:{version}", window_s=window)
    )
    drifted = [f.name for f in report.features if f.drifted]
    print(f"drift check: {report.status}, drifted: {', '.join(drifted) or 'none'}")
    p50 = 1000 * (summary.latency_p50_s or 0.0)
    print(f"summary: {summary.requests} requests, error rate {summary.error_rate:.1%},")
    print(f"  p50 {p50:.1f} ms, predicted classes {summary.prediction_distribution}")


async def main(data_dir: str) -> None:
    # log every prediction's inputs, so the drift check has enough rows to compare
    settings = {"data_dir": data_dir, "log_level": "WARNING"}
    async with app.connect(inference={"prediction_log_sample": 1.0}, **settings) as q:
        print(f"platform running in this process, data in {data_dir}")
        await run(q)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="where Quarry keeps its data (default: a temp dir)")
    args = parser.parse_args()
    if args.data_dir:
        asyncio.run(main(args.data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="quarry-example-") as tmp:
            asyncio.run(main(tmp))
