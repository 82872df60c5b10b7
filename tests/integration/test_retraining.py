"""Retraining sagas in one process: triggers are idempotent, gates and rollouts decide, failures
compensate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.bootstrap import Platform
from app.kernel.events import EventMeta
from app.kernel.settings import Settings
from app.modules.training.settings import TrainingSettings
from contracts.common import InvalidInput, NotFound
from contracts.inference import Predict, RolloutPolicy
from contracts.monitoring import DriftDetected
from contracts.registry import GetAlias
from contracts.training import (
    Gate,
    GetRetrainingPolicy,
    ListRetrainings,
    ListTrainingJobs,
    PutRetrainingPolicy,
    Retrain,
    RetrainingPolicy,
    SubmitTrainingJob,
)
from tests.integration.test_training_jobs import churn_spec, finished, seed_features

pytest.importorskip("torch")

MODULES = ("registry", "features", "monitoring", "inference", "training")


class Q:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        for name in MODULES:
            setattr(self, name, platform.client(name, caller="tests"))
        self.sagas = platform.built["training"].service.retrainings


@pytest.fixture
async def q(tmp_path: Path) -> AsyncIterator[Q]:
    config = TrainingSettings(heartbeat_s=60.0, stale_s=120.0)
    settings = Settings(data_dir=tmp_path).with_module(config)
    async with Platform(settings) as platform:
        yield Q(platform)


async def trained(q: Q, **spec: Any) -> Any:
    entity_rows = await seed_features(q)
    job = await q.training.submit_job(SubmitTrainingJob(spec=churn_spec(entity_rows, **spec)))
    done = await finished(q, job.id)
    assert done.status == "succeeded", done.error
    return done


async def saga_settles(q: Q, saga_id: str, within: float = 90) -> Any:
    """Advance the saga (as the training loop does) until it leaves ``training``."""
    deadline = time.monotonic() + within
    while True:
        saga = await q.sagas.advance(saga_id)
        if saga.status != "training":
            return saga
        assert time.monotonic() < deadline, saga
        await asyncio.sleep(0.05)


def drift(report_id: str) -> tuple[DriftDetected, EventMeta]:
    event = DriftDetected(
        model="churn", version=1, report_id=report_id, share_drifted=0.5, features=["users:x1"]
    )
    meta = EventMeta(
        id=f"event-{report_id}",
        type="DriftDetected",
        publisher="monitoring",
        created_at=time.time(),
        attempt=1,
    )
    return event, meta


async def test_a_drift_event_delivered_three_times_starts_one_retraining(q: Q) -> None:
    await trained(q)
    await q.training.put_retraining_policy(
        PutRetrainingPolicy(policy=RetrainingPolicy(model="churn", on_drift=True))
    )
    event, meta = drift("report-1")

    for _ in range(3):  # at-least-once delivery
        await q.sagas.on_drift(event, meta)

    sagas = (await q.training.list_retrainings(ListRetrainings(model="churn"))).items
    assert len(sagas) == 1
    assert sagas[0].trigger == "drift:report-1"
    jobs = (await q.training.list_jobs(ListTrainingJobs())).items
    assert len(jobs) == 2  # the first training and one retraining
    assert sagas[0].job_id in {j.id for j in jobs}


async def test_drift_without_a_policy_starts_nothing(q: Q) -> None:
    await trained(q)
    event, meta = drift("report-2")
    await q.sagas.on_drift(event, meta)
    assert (await q.training.list_retrainings(ListRetrainings())).items == []


async def test_a_version_that_fails_its_gate_ends_the_saga_without_a_rollout(q: Q) -> None:
    await trained(q, gate=Gate(metric="accuracy", threshold=1.01, promote_to="candidate"))
    saga = await q.training.retrain(Retrain(model="churn"))

    settled = await saga_settles(q, saga.id)

    assert settled.status == "failed"
    assert "did not pass the gate" in (settled.error or "")
    assert settled.rollout_id is None


async def test_a_passing_version_is_rolled_out_and_promoted(q: Q) -> None:
    first = await trained(q, gate=Gate(metric="accuracy", threshold=0.5, promote_to="champion"))
    # latencies of a few milliseconds on a shared test machine are noise: the slack ignores them
    policy = RolloutPolicy(steps=[50.0, 100.0], interval_s=0.01, min_requests=1, latency_slack_s=1)
    await q.training.put_retraining_policy(
        PutRetrainingPolicy(policy=RetrainingPolicy(model="churn", rollout=policy))
    )
    saga = await q.training.retrain(Retrain(model="churn"))
    rolling = await saga_settles(q, saga.id)
    assert rolling.status == "rolling_out", rolling
    assert rolling.version == first.version + 1

    rollouts = q.platform.built["inference"].service
    for _ in range(20):  # traffic through the deployment, then the stepper decides
        for user in range(10):
            await q.inference.predict(Predict(model="churn-live", entities={"user_id": [user]}))
        await rollouts.records.flush()
        await rollouts.rollouts.step_once()
        done = await q.sagas.advance(saga.id)
        if done.status != "rolling_out":
            break
    assert done.status == "succeeded", (done.error, done.log)
    champion = await q.registry.get_alias(GetAlias(name="churn", alias="champion"))
    assert champion.version == rolling.version


async def test_a_rollout_that_cannot_start_is_compensated(q: Q) -> None:
    await trained(q, gate=Gate(metric="accuracy", threshold=0.5, promote_to="candidate"))
    await q.training.put_retraining_policy(
        PutRetrainingPolicy(
            policy=RetrainingPolicy(
                model="churn", deployment="churn", rollout=RolloutPolicy(steps=[])
            )
        )
    )
    saga = await q.training.retrain(Retrain(model="churn"))

    settled = await saga_settles(q, saga.id)

    assert settled.status == "compensated", settled
    assert "rollout could not start" in (settled.error or "")
    with pytest.raises(NotFound):
        await q.registry.get_alias(GetAlias(name="churn", alias="candidate"))
    assert any("alias 'candidate' removed" in line for line in settled.log)


async def test_a_policy_job_is_checked_like_a_submission(q: Q) -> None:
    entity_rows = await seed_features(q)
    other = churn_spec(entity_rows, model="other")
    with pytest.raises(InvalidInput, match="trains 'other', not 'churn'"):
        await q.training.put_retraining_policy(
            PutRetrainingPolicy(policy=RetrainingPolicy(model="churn", job=other))
        )
    unknown = msgspec.structs.replace(churn_spec(entity_rows), trainer="no_such_trainer")
    with pytest.raises(InvalidInput, match="no_such_trainer"):
        await q.training.put_retraining_policy(
            PutRetrainingPolicy(policy=RetrainingPolicy(model="churn", job=unknown))
        )
    with pytest.raises(NotFound):
        await q.training.get_retraining_policy(GetRetrainingPolicy(model="churn"))
