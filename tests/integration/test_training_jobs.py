"""Training jobs end to end in one process: features -> job -> gated version -> predictions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.bootstrap import Platform
from app.kernel.settings import Settings
from app.modules.training.settings import TrainingSettings
from contracts.common import InvalidInput
from contracts.features import (
    Feature,
    PushRows,
    PutFeatureService,
    PutFeatureView,
    Standardize,
)
from contracts.inference import Predict
from contracts.registry import (
    GetReferenceProfile,
    GetVersion,
    ListVersions,
    SetAlias,
)
from contracts.training import (
    CancelTrainingJob,
    Dataset,
    Gate,
    GetTrainingJob,
    ListTrainers,
    ListTrainingJobs,
    SubmitTrainingJob,
    TrainingJob,
    TrainingJobSpec,
)

pytest.importorskip("torch")

USERS = 240
TERMINAL = ("succeeded", "failed", "cancelled")


async def finished(q: Any, job_id: str, within_s: float = 90) -> TrainingJob:
    """Poll the job until it has an outcome (the watchdog and workers run in the background)."""
    deadline = time.monotonic() + within_s
    while True:
        job = await q.training.get_job(GetTrainingJob(id=job_id))
        if job.status in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {within_s} s"
        await asyncio.sleep(0.05)


async def seed_features(q: Any) -> list[dict[str, Any]]:
    """Users whose label is ``x1 + x2 > 0``; answers entity rows for all of them."""
    await q.features.put_view(
        PutFeatureView(
            name="users",
            entities=["user_id"],
            features=[
                Feature(name="x1", dtype="float"),
                Feature(name="x2", dtype="float"),
                Feature(name="churned", dtype="int"),
            ],
        )
    )
    rng = np.random.default_rng(7)
    x = rng.normal(size=(USERS, 2)) * [3.0, 0.5] + [10.0, 0.0]
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    rows = [
        {
            "user_id": i,
            "event_timestamp": when,
            "x1": float(x[i, 0]),
            "x2": float(x[i, 1]),
            "churned": int((x[i, 0] - 10.0) / 3.0 + x[i, 1] / 0.5 > 0),
        }
        for i in range(USERS)
    ]
    await q.features.push(PushRows(view="users", rows=rows))
    await q.features.put_service(
        PutFeatureService(
            name="churn",
            features=["users:x1", "users:x2"],
            transforms=[Standardize(input="users:x1"), Standardize(input="users:x2")],
        )
    )
    now = datetime.now(UTC).isoformat()
    return [{"user_id": i, "event_timestamp": now} for i in range(USERS)]


def churn_spec(entity_rows: list[dict[str, Any]], **overrides: Any) -> TrainingJobSpec:
    fields: dict[str, Any] = {
        "trainer": "mlp_classifier",
        "model": "churn",
        "dataset": Dataset(feature_service="churn", entity_rows=entity_rows, label="users:churned"),
        "hyperparameters": {"epochs": 30, "hidden": 16},
    }
    return TrainingJobSpec(**(fields | overrides))


class Connected:
    """The platform's contracts as attributes, like ``app.connect()``, plus the platform."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        for name in ("registry", "features", "inference", "training"):
            setattr(self, name, platform.client(name, caller="tests"))


@pytest.fixture
async def q(tmp_path: Path) -> AsyncIterator[Any]:
    settings = Settings(data_dir=tmp_path).with_module(
        TrainingSettings(heartbeat_s=0.2, stale_s=1.0, trainers=("tests.fakes.trainers",))
    )
    async with Platform(settings) as platform:
        yield Connected(platform)


async def test_a_job_trains_registers_with_lineage_and_serves_by_entity(q: Any) -> None:
    entity_rows = await seed_features(q)
    gate = Gate(metric="accuracy", threshold=0.8, baseline="champion", promote_to="candidate")
    job = await q.training.submit_job(SubmitTrainingJob(spec=churn_spec(entity_rows, gate=gate)))
    assert job.status == "queued"

    done = await finished(q, job.id)

    assert done.status == "succeeded", done.error
    assert done.verdict is not None
    assert done.verdict.passed, done.verdict
    assert done.metrics["accuracy"] >= 0.8
    assert done.epoch > 0
    assert done.attempt == 1
    assert [r.epoch for r in done.history] == list(range(1, done.epoch + 1))
    assert all("train_loss" in r.metrics for r in done.history), done.history
    [listed] = [j for j in (await q.training.list_jobs(ListTrainingJobs())).items if j.id == job.id]
    assert listed.history == []  # lists leave the curves out
    version = await q.registry.get_version(GetVersion(ref="churn@candidate"))
    assert version.version == done.version
    assert version.lineage.training_job_id == job.id
    assert version.lineage.feature_service == "churn:1"
    assert version.lineage.transform_state
    assert version.lineage.dataset_digest
    assert "torch" in version.lineage.extra
    assert version.params["trainer"] == "mlp_classifier"
    assert version.tags["gate"] == "passed"
    profile = await q.registry.get_reference_profile(GetReferenceProfile(ref="churn@candidate"))
    assert profile.columns == ["users:x1", "users:x2"]
    assert 0 < profile.sample.to_numpy().shape[0] <= 5000
    assert "probabilities" in profile.predictions

    prediction = await q.inference.predict(
        Predict(model="churn@candidate", entities={"user_id": [0, 1, 2]})
    )
    probabilities = prediction.outputs["probabilities"].to_numpy()
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


async def test_the_gate_compares_with_the_champion_on_the_same_rows(q: Any) -> None:
    entity_rows = await seed_features(q)
    first = await finished(
        q, (await q.training.submit_job(SubmitTrainingJob(spec=churn_spec(entity_rows)))).id
    )
    assert first.status == "succeeded", first.error
    await q.registry.set_alias(SetAlias(name="churn", alias="champion", version=first.version))

    gate = Gate(metric="accuracy", baseline="champion", min_absolute_change=0.5)
    second = await finished(
        q,
        (
            await q.training.submit_job(SubmitTrainingJob(spec=churn_spec(entity_rows, gate=gate)))
        ).id,
    )

    assert second.status == "succeeded", second.error
    verdict = second.verdict
    assert verdict is not None
    assert not verdict.passed
    assert verdict.baseline_version == first.version
    assert verdict.baseline_value is not None
    assert verdict.baseline_value > 0.5
    assert verdict.reasons
    registered = await q.registry.get_version(GetVersion(ref=f"churn:{second.version}"))
    assert registered.tags["gate"] == "failed"
    with pytest.raises(Exception, match="candidate"):
        await q.registry.get_version(GetVersion(ref="churn@candidate"))


async def test_a_message_delivered_twice_registers_one_version(q: Any, tmp_path: Path) -> None:
    entity_rows = await seed_features(q)
    job = await q.training.submit_job(SubmitTrainingJob(spec=churn_spec(entity_rows)))
    service = q.platform.built["training"].service  # the actor, to deliver the message again
    service._actor.send(job.id)

    done = await finished(q, job.id)

    assert done.status == "succeeded", done.error
    assert done.attempt == 1
    versions = await q.registry.list_versions(ListVersions(name="churn"))
    assert [v.version for v in versions.items] == [done.version]


async def test_a_run_whose_worker_died_is_run_again_once(q: Any) -> None:
    entity_rows = await seed_features(q)
    service = q.platform.built["training"].service
    # A claimed run that never heartbeats again: what a killed worker leaves behind.
    from app.modules.training import store

    job_id = "died-mid-run"
    spec = churn_spec(entity_rows)

    def died(conn: Any) -> None:
        store.insert(conn, job_id, spec, time.time())
        store.claim(conn, job_id, "dead-worker", time.time() - 60, 0.0)

    await service._db.write(died)

    done = await finished(q, job_id)

    assert done.status == "succeeded", done.error
    assert done.attempt == 2
    versions = await q.registry.list_versions(ListVersions(name="churn"))
    assert len(versions.items) == 1


async def test_a_user_trainer_is_discovered_and_used(q: Any) -> None:
    trainers = await q.training.list_trainers(ListTrainers())
    names = {t.name: t for t in trainers.items}
    assert {"logistic_regression", "mlp_classifier", "mlp_regressor"} <= set(names)
    assert "tiny_linear" in names
    assert not names["tiny_linear"].builtin

    rows = [{"a": float(i), "b": float(i % 3), "y": 2.0 * i + 1.0} for i in range(60)]
    job = await q.training.submit_job(
        SubmitTrainingJob(
            spec=TrainingJobSpec(
                trainer="tiny_linear",
                model="linear",
                dataset=Dataset(rows=rows, features=["a", "b"], label="y"),
            )
        )
    )
    done = await finished(q, job.id)
    assert done.status == "succeeded", done.error
    assert set(done.metrics) >= {"rmse", "mae", "r2"}
    version = await q.registry.get_version(GetVersion(ref=f"linear:{done.version}"))
    assert version.params["trainer"] == "tiny_linear"
    assert version.lineage.feature_service is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trainer": "gradient_boosting"}, "gradient_boosting"),
        ({"hyperparameters": {"epochs": "many"}}, "epochs"),
        ({"hyperparameters": {"learning_speed": 1.0}}, "learning_speed"),
        ({"dataset": Dataset(rows=[], features=["a"], label="y")}, "empty"),
        ({"dataset": Dataset(rows=[{"a": 1.0}], features=["a"], label="y")}, "label"),
        ({"dataset": Dataset(feature_service="nope", entity_rows=[{"u": 1}], label="v:y")}, "nope"),
        ({"gate": Gate(metric="rmse")}, "rmse"),
        ({"model": "../etc"}, "model name"),
    ],
)
async def test_bad_specs_are_refused_at_submission(
    q: Any, change: dict[str, Any], message: str
) -> None:
    entity_rows = await seed_features(q)
    with pytest.raises(InvalidInput, match=message):
        await q.training.submit_job(SubmitTrainingJob(spec=churn_spec(entity_rows, **change)))


async def test_a_gate_naming_a_missing_alias_is_refused_once_the_model_exists(q: Any) -> None:
    rows = [{"a": float(i), "y": float(i)} for i in range(20)]
    spec = TrainingJobSpec(
        trainer="tiny_linear", model="lin", dataset=Dataset(rows=rows, features=["a"], label="y")
    )
    assert (
        await finished(q, (await q.training.submit_job(SubmitTrainingJob(spec=spec))).id)
    ).status == "succeeded"
    gated = TrainingJobSpec(
        trainer="tiny_linear",
        model="lin",
        dataset=spec.dataset,
        gate=Gate(metric="rmse", baseline="champion"),
    )
    with pytest.raises(InvalidInput, match="champion"):
        await q.training.submit_job(SubmitTrainingJob(spec=gated))


async def test_missing_values_fail_the_job_with_a_reason(q: Any) -> None:
    rows = [{"a": None if i == 3 else float(i), "y": float(i)} for i in range(20)]
    job = await q.training.submit_job(
        SubmitTrainingJob(
            spec=TrainingJobSpec(
                trainer="tiny_linear",
                model="gaps",
                dataset=Dataset(rows=rows, features=["a"], label="y"),
            )
        )
    )
    done = await finished(q, job.id)
    assert done.status == "failed"
    assert "missing or non-finite" in (done.error or "")
    with pytest.raises(Exception, match="gaps"):
        await q.registry.list_versions(ListVersions(name="gaps"))


async def test_cancelling_a_running_job_stops_it(q: Any) -> None:
    entity_rows = await seed_features(q)
    spec = churn_spec(
        entity_rows, hyperparameters={"epochs": 100_000, "hidden": 16, "patience": 100_000}
    )
    job = await q.training.submit_job(SubmitTrainingJob(spec=spec))
    deadline = time.monotonic() + 60
    while (await q.training.get_job(GetTrainingJob(id=job.id))).epoch < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    await q.training.cancel_job(CancelTrainingJob(id=job.id))
    done = await finished(q, job.id)

    assert done.status == "cancelled"
    with pytest.raises(Exception, match="churn"):
        await q.registry.list_versions(ListVersions(name="churn"))


async def test_a_job_past_its_time_limit_fails_with_the_reason(q: Any) -> None:
    entity_rows = await seed_features(q)
    spec = churn_spec(
        entity_rows,
        hyperparameters={"epochs": 100_000, "hidden": 16, "patience": 100_000},
        time_limit_s=1.0,
    )
    job = await q.training.submit_job(SubmitTrainingJob(spec=spec))
    done = await finished(q, job.id)
    assert done.status == "failed"
    assert "time limit" in (done.error or "")
    assert done.attempt == 1
