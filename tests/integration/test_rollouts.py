"""Progressive rollouts in one process: traffic moves step by step, judged on monitoring's figures.

The stepper is driven with ``step_once(now=...)`` at each rollout's next check time instead of
waiting on the clock; prediction records are flushed to monitoring before each check.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
import sqlalchemy as sa

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference._rollout_judge import check_policy, judge
from app.modules.inference.service import LocalInferenceService
from app.modules.inference.settings import InferenceSettings
from contracts.common import Conflict, InvalidInput, Tensor, Unavailable, UnprocessableInput
from contracts.inference import (
    AbortRollout,
    GetDeployment,
    GetRollout,
    ListRollouts,
    Predict,
    PromoteRollout,
    Rollout,
    RolloutPolicy,
    Route,
    StartRollout,
)
from contracts.monitoring import RealisedMetrics, Summary
from contracts.registry import GetAlias, RegisterVersion, SetAlias
from tests.fakes.models import linear_onnx

MODEL = "fraud-model"
DEPLOYMENT = "fraud"
POLICY = RolloutPolicy(
    steps=[25.0, 50.0, 100.0], interval_s=60.0, min_requests=5, latency_slack_s=1.0
)
"""Latencies of a few milliseconds on a shared test machine are noise: the slack ignores them."""
ROWS = Tensor.from_numpy(np.ones((2, 3), dtype=np.float32))


class Q:
    """The platform's clients, and the inference service for its stepper and recorder."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.registry = platform.client("registry", caller="tests")
        self.inference = platform.client("inference", caller="tests")
        service = platform.built["inference"].service
        assert isinstance(service, LocalInferenceService)
        assert service.rollouts is not None
        self.service = service
        self.rollouts = service.rollouts

    async def traffic(self, requests: int = 60) -> int:
        """Predict through the deployment (sticky keys make the split repeatable); answers how
        many requests failed."""
        failed = 0
        for i in range(requests):
            predict = Predict(model=DEPLOYMENT, inputs={"x": ROWS}, sticky_key=f"user-{i}")
            try:
                await self.inference.predict(predict)
            except UnprocessableInput:
                failed += 1
        return failed

    async def step(self, rollout: Rollout) -> Rollout:
        """Flush the records, run the stepper at the rollout's next check, answer it after."""
        await self.service.records.flush()
        assert rollout.next_check_at is not None
        await self.rollouts.step_once(now=rollout.next_check_at)
        return await self.inference.get_rollout(GetRollout(id=rollout.id))

    async def routes(self) -> list[Route]:
        return (await self.inference.get_deployment(GetDeployment(name=DEPLOYMENT))).routes


def _settings(data_dir: Path, modules: tuple[str, ...]) -> Settings:
    return Settings(data_dir=data_dir, modules=modules).with_module(
        InferenceSettings(prediction_log_sample=0.0)
    )


@pytest.fixture
async def q(tmp_path: Path) -> AsyncIterator[Q]:
    settings = _settings(tmp_path, ("registry", "monitoring", "inference"))
    async with Platform(settings) as platform:
        yield Q(platform)


async def _models(q: Q, *, broken_candidate: bool = False) -> None:
    """Version 1 (the champion) and version 2; a broken v2 wants 4 features, not 3."""
    await q.registry.register_version(RegisterVersion(name=MODEL, artifact=linear_onnx(seed=0)))
    candidate = linear_onnx(4, 2, seed=1) if broken_candidate else linear_onnx(seed=1)
    await q.registry.register_version(RegisterVersion(name=MODEL, artifact=candidate))
    await q.registry.set_alias(SetAlias(name=MODEL, alias="champion", version=1))


async def _start(q: Q, policy: RolloutPolicy = POLICY) -> Rollout:
    return await q.inference.start_rollout(
        StartRollout(deployment=DEPLOYMENT, candidate=f"{MODEL}:2", policy=policy)
    )


async def test_a_healthy_candidate_reaches_100_percent_and_is_promoted(q: Q) -> None:
    await _models(q)
    rollout = await _start(q)
    assert (rollout.baseline, rollout.candidate) == (f"{MODEL}:1", f"{MODEL}:2")
    assert (rollout.status, rollout.percent, rollout.history[0].action) == ("running", 25, "start")
    assert await q.routes() == [
        Route(model=f"{MODEL}:1", weight=75.0),
        Route(model=f"{MODEL}:2", weight=25.0),
    ]

    seen = []
    while rollout.status == "running":
        assert await q.traffic() == 0
        rollout = await q.step(rollout)
        seen.append(rollout.percent)
        if rollout.status == "running":
            assert [r.weight for r in await q.routes()][-1] == rollout.percent

    assert seen == [50.0, 100.0, 100.0]
    assert (rollout.status, rollout.percent, rollout.next_check_at) == ("promoted", 100, None)
    assert [s.action for s in rollout.history] == ["start", "advance", "advance", "promote"]
    assert all("within limits" in s.reason for s in rollout.history[1:])
    assert rollout.history[-1].figures["candidate_error_rate"] == 0.0
    # started from the champion, the deployment follows it again once it moved to v2
    assert rollout.follows == f"{MODEL}@champion"
    assert await q.routes() == [Route(model=f"{MODEL}@champion", weight=100.0)]
    champion = await q.registry.get_alias(GetAlias(name=MODEL, alias="champion"))
    assert champion.version == 2


async def test_a_candidate_that_fails_is_rolled_back_on_its_own(q: Q) -> None:
    await _models(q, broken_candidate=True)
    rollout = await _start(q)

    failed = await q.traffic()
    assert failed >= POLICY.min_requests  # every request routed to v2 fails
    rollout = await q.step(rollout)

    assert (rollout.status, rollout.percent) == ("rolled_back", 0)
    last = rollout.history[-1]
    assert last.action == "rollback"
    assert last.reason.startswith(
        "candidate error rate 1.00 exceeds the baseline's 0.00 by more than 0.02"
    )
    assert last.figures["candidate_requests"] == failed
    assert await q.routes() == [Route(model=f"{MODEL}@champion", weight=100.0)]
    champion = await q.registry.get_alias(GetAlias(name=MODEL, alias="champion"))
    assert champion.version == 1


async def test_too_little_traffic_holds_the_step(q: Q) -> None:
    await _models(q)
    rollout = await _start(q)

    held = await q.step(rollout)
    held = await q.step(held)

    assert (held.status, held.percent, held.step) == ("running", 25, 0)
    assert [s.action for s in held.history] == ["start", "hold"]  # repeated holds: one line
    assert "fewer than the 5 needed" in held.history[-1].reason
    assert held.next_check_at is not None
    assert rollout.next_check_at is not None
    assert held.next_check_at > rollout.next_check_at
    assert len(await q.routes()) == 2


async def test_promote_and_abort_by_hand(q: Q) -> None:
    await _models(q)
    rollout = await _start(q)
    aborted = await q.inference.abort_rollout(AbortRollout(id=rollout.id))
    assert (aborted.status, aborted.history[-1].reason) == ("aborted", "aborted by hand")
    assert await q.routes() == [Route(model=f"{MODEL}@champion", weight=100.0)]
    again = await q.inference.promote_rollout(PromoteRollout(id=rollout.id))
    assert again.status == "aborted"  # a finished rollout is answered as it is

    second = await _start(q)
    promoted = await q.inference.promote_rollout(PromoteRollout(id=second.id, reason="looks good"))
    assert (promoted.status, promoted.percent) == ("promoted", 100)
    assert promoted.history[-1].reason == "looks good"
    assert await q.routes() == [Route(model=f"{MODEL}@champion", weight=100.0)]
    champion = await q.registry.get_alias(GetAlias(name=MODEL, alias="champion"))
    assert champion.version == 2

    page = await q.inference.list_rollouts(ListRollouts(deployment=DEPLOYMENT))
    assert [r.id for r in page.items] == [second.id, rollout.id]


async def test_a_second_running_rollout_is_a_conflict(q: Q) -> None:
    await _models(q)
    first = await _start(q)
    with pytest.raises(Conflict, match=first.id):
        await _start(q)


async def test_every_change_is_an_event_in_the_outbox(q: Q) -> None:
    await _models(q)
    rollout = await _start(q)
    await q.inference.abort_rollout(AbortRollout(id=rollout.id))

    db = q.platform.databases["inference"]
    with db.engine.connect() as conn:
        types = conn.execute(sa.text("SELECT type FROM inference_outbox ORDER BY seq")).scalars()
        assert list(types) == ["RolloutChanged", "RolloutChanged"]


async def test_a_rollout_survives_a_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ("registry", "monitoring", "inference"))
    async with Platform(settings) as platform:
        q = Q(platform)
        await _models(q)
        rollout = await _start(q)

    async with Platform(settings) as platform:
        q = Q(platform)
        found = await q.inference.get_rollout(GetRollout(id=rollout.id))
        assert (found.status, found.percent) == ("running", 25)
        await q.traffic()
        moved = await q.step(found)
        assert (moved.status, moved.percent) == ("running", 50)
        assert [r.weight for r in await q.routes()] == [50.0, 50.0]


async def test_without_monitoring_a_rollout_cannot_start(tmp_path: Path) -> None:
    async with Platform(_settings(tmp_path, ("registry", "inference"))) as platform:
        q = Q(platform)
        await _models(q)
        with pytest.raises(Unavailable, match="QUARRY_REMOTE_MONITORING"):
            await _start(q)


async def test_rollouts_over_http(q: Q) -> None:
    await _models(q)
    transport = httpx.ASGITransport(app=create_app(q.platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        base = f"/v1/inference/deployments/{DEPLOYMENT}/rollouts"
        body = {"candidate": f"{MODEL}:2", "policy": {"steps": [50, 100], "interval_s": 30}}
        started = await http.post(base, json=body)
        assert started.status_code == 201, started.text
        rollout = started.json()
        assert (rollout["percent"], rollout["baseline"]) == (50, f"{MODEL}:1")

        assert (await http.post(base, json=body)).status_code == 409
        assert (await http.post(base, json={"candidat": "x"})).status_code == 400
        listed = (await http.get(base)).json()
        assert [r["id"] for r in listed["items"]] == [rollout["id"]]
        shown = await http.get(f"/v1/inference/rollouts/{rollout['id']}")
        assert shown.json()["history"][0]["action"] == "start"
        assert (await http.get("/v1/inference/rollouts/nope")).status_code == 404

        aborted = await http.post(
            f"/v1/inference/rollouts/{rollout['id']}/abort", json={"reason": "not today"}
        )
        assert aborted.status_code == 200
        assert (aborted.json()["status"], aborted.json()["history"][-1]["reason"]) == (
            "aborted",
            "not today",
        )
        promoted = await http.post(f"/v1/inference/rollouts/{rollout['id']}/promote")
        assert promoted.json()["status"] == "aborted"


def test_the_cli_lists_and_shows_rollouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    assert main(["--data-dir", str(tmp_path), "rollouts", "list", "--deployment", "fraud"]) == 0
    assert json.loads(capsys.readouterr().out) == {"items": [], "next_cursor": None}
    assert main(["--data-dir", str(tmp_path), "rollouts", "abort", "nope"]) == 1
    assert "not_found" in capsys.readouterr().err


def _summary(version: int, *, requests: int, errors: int = 0, p99: float | None = 0.01) -> Summary:
    return Summary(
        model=MODEL,
        version=version,
        window_s=60,
        requests=requests,
        errors=errors,
        qps=requests / 60,
        error_rate=errors / requests if requests else 0.0,
        latency_p50_s=p99,
        latency_p95_s=p99,
        latency_p99_s=p99,
        slo_latency_s=0.1,
        slo_compliance=1.0,
    )


def _realised(version: int, accuracy: float, count: int = 30) -> RealisedMetrics:
    return RealisedMetrics(
        model=MODEL,
        version=version,
        task="classification",
        count=count,
        metrics={"accuracy": accuracy},
    )


def test_the_verdict_rolls_back_on_latency_and_realised_quality() -> None:
    base = _summary(1, requests=100)
    strict = msgspec.structs.replace(POLICY, latency_slack_s=0.005)
    slow = judge(strict, _summary(2, requests=30, p99=0.05), base)
    assert slow.action == "rollback"
    assert slow.reason.startswith("candidate p99 latency 0.050 s exceeds 1.5 times")

    worse = (_realised(2, 0.70), _realised(1, 0.90))
    verdict = judge(POLICY, _summary(2, requests=30), base, worse)
    assert (verdict.action, verdict.figures["baseline_accuracy"]) == ("rollback", 0.90)
    assert "accuracy 0.700 is below the baseline's 0.900" in verdict.reason

    too_few = (_realised(2, 0.70, count=3), _realised(1, 0.90))
    assert judge(POLICY, _summary(2, requests=30), base, too_few).action == "passed"


def test_without_feedback_the_verdict_judges_estimated_quality() -> None:
    def estimated(version: int, accuracy: float) -> Summary:
        summary = _summary(version, requests=30)
        return msgspec.structs.replace(summary, estimated={"accuracy": accuracy})

    assert judge(POLICY, estimated(2, 0.70), estimated(1, 0.90)).action == "passed"  # not asked
    policy = msgspec.structs.replace(POLICY, judge_estimated=True)
    worse = judge(policy, estimated(2, 0.70), estimated(1, 0.90))
    assert worse.action == "rollback"
    assert "accuracy estimated without labels 0.700 is below the baseline's 0.900" in worse.reason
    assert worse.figures["candidate_estimated_accuracy"] == 0.70

    too_few = (_realised(2, 0.70, count=3), _realised(1, 0.90))
    assert judge(policy, estimated(2, 0.70), estimated(1, 0.90), too_few).action == "rollback"
    assert judge(policy, estimated(2, 0.89), estimated(1, 0.90)).action == "passed"
    # feedback, where there is enough, is what counts
    labelled = (_realised(2, 0.90), _realised(1, 0.90))
    assert judge(policy, estimated(2, 0.70), estimated(1, 0.90), labelled).action == "passed"


@pytest.mark.parametrize("steps", [[], [50.0], [50.0, 25.0, 100.0], [0.0, 100.0]])
def test_a_policy_that_cannot_run_is_refused(steps: list[float]) -> None:
    with pytest.raises(InvalidInput, match=r"policy\.steps"):
        check_policy(RolloutPolicy(steps=steps))
