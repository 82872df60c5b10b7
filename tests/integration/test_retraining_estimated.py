"""A retraining whose rollout is judged on quality estimated without labels: the saga is
compensated when the estimate rolls its version back, and its log says which quality decided.

The training job is the one step faked (its outcome, version 2, is registered by the test): the
saga, its policy, the rollout, monitoring's estimate and the compensation are the platform's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.bootstrap import Platform
from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings
from app.modules.monitoring.settings import MonitoringSettings
from app.modules.training.retraining import Retrainings
from app.modules.training.settings import TrainingSettings
from contracts.common import NotFound
from contracts.inference import GetRollout
from contracts.registry import GetAlias, SetAlias
from contracts.training import (
    Dataset,
    Gate,
    Retrain,
    RetrainingPolicy,
    TrainingJob,
    TrainingJobSpec,
)
from tests.integration.test_estimated_quality import (
    DEPLOYMENT,
    MODEL,
    POLICY,
    Q,
    drive,
    fit,
    register,
)

MODULES = ("registry", "features", "monitoring", "inference", "training")
SPEC = TrainingJobSpec(
    trainer="logistic",
    model=MODEL,
    dataset=Dataset(rows=[{"x": 0.0, "y": 0}], label="y"),
    gate=Gate(metric="accuracy", threshold=0.5, promote_to="candidate"),
)


class FakeJobs:
    """Training jobs that have already succeeded with version 2 (the test registers it)."""

    def __init__(self) -> None:
        self.jobs: dict[str, TrainingJob] = {}

    async def submit(self, spec: TrainingJobSpec) -> TrainingJob:
        now = datetime.now(UTC)
        job = TrainingJob(
            id=f"job-{len(self.jobs) + 1}",
            spec=spec,
            status="succeeded",
            version=2,
            created_at=now,
            updated_at=now,
        )
        self.jobs[job.id] = job
        return job

    async def get(self, job_id: str) -> TrainingJob:
        return self.jobs[job_id]


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(data_dir=tmp_path, modules=MODULES).with_module(
        InferenceSettings(prediction_log_sample=0.0),
        MonitoringSettings(alert_interval_s=0, drift_interval_s=0),
        TrainingSettings(heartbeat_s=60.0, stale_s=120.0),
    )
    async with Platform(settings) as started:
        yield started


def _sagas(platform: Platform) -> Retrainings:
    sagas = platform.built["training"].service.retrainings
    assert isinstance(sagas, Retrainings)
    fake = FakeJobs()
    sagas._submit = fake.submit
    sagas._get_job = fake.get
    return sagas


@pytest.mark.parametrize(
    ("candidate_seed", "blind", "status"),
    [(0, True, "compensated"), (1, False, "succeeded")],
    ids=["worse", "equal"],
)
async def test_a_retraining_is_judged_on_the_estimate_when_no_labels_arrive(
    platform: Platform, candidate_seed: int, blind: bool, status: str
) -> None:
    """Worse: trained blind to the strongest feature (see the rollout test of the same name);
    equal: the same recipe on another sample."""
    q = Q(platform)
    sagas = _sagas(platform)
    training = platform.client("training", caller="tests")
    await register(q, fit(seed=candidate_seed, blind_to_first=blind))
    await q.registry.set_alias(SetAlias(name=MODEL, alias="candidate", version=2))  # its gate
    await sagas.put_policy(
        RetrainingPolicy(
            model=MODEL, on_drift=False, deployment=DEPLOYMENT, rollout=POLICY, job=SPEC
        )
    )

    saga = await training.retrain(Retrain(model=MODEL, reason="labels are late"))
    saga = await sagas.advance(saga.id)
    assert (saga.status, saga.version) == ("rolling_out", 2), saga.log
    assert saga.rollout_id is not None
    await drive(q, await q.inference.get_rollout(GetRollout(id=saga.rollout_id)))
    saga = await sagas.advance(saga.id)

    assert saga.status == status, saga.log
    if status == "compensated":
        assert "accuracy estimated without labels" in (saga.error or "")
        assert saga.log[-1].endswith(
            "quality judged on accuracy estimated without labels at 1 step;"
            " alias 'candidate' removed from version 2"
        ), saga.log
        with pytest.raises(NotFound):
            await q.registry.get_alias(GetAlias(name=MODEL, alias="candidate"))
    else:
        assert saga.log[-1].startswith("rollout promoted: ")
        assert "; quality judged on accuracy estimated without labels at" in saga.log[-1]
        champion = await q.registry.get_alias(GetAlias(name=MODEL, alias="champion"))
        assert champion.version == 2
