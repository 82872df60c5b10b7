"""Which quality a retraining's rollout judged its candidate on, read from the rollout's steps."""

from __future__ import annotations

from datetime import UTC, datetime

from app.modules.training.retraining import quality_judged
from contracts.inference import Rollout, RolloutPolicy, RolloutStep

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _rollout(*figures: dict[str, float], judge_estimated: bool = True) -> Rollout:
    steps = [
        RolloutStep(at=NOW, action="advance", percent=50, reason="", figures=f) for f in figures
    ]
    return Rollout(
        id="r",
        deployment="d",
        baseline="m:1",
        candidate="m:2",
        policy=RolloutPolicy(judge_estimated=judge_estimated),
        status="promoted",
        percent=100,
        step=1,
        history=steps,
        created_at=NOW,
        updated_at=NOW,
    )


def test_the_realised_and_the_estimated_quality_are_told_apart() -> None:
    realised = {"candidate_accuracy": 0.9, "candidate_feedback": 40.0}
    estimated = {"candidate_estimated_accuracy": 0.9}
    assert quality_judged(_rollout(realised)) == (
        "quality judged on realised accuracy from feedback at 1 step"
    )
    assert quality_judged(_rollout(estimated, estimated)) == (
        "quality judged on accuracy estimated without labels at 2 steps"
    )
    assert quality_judged(_rollout(realised, estimated)) == (
        "quality judged on realised accuracy from feedback at 1 step"
        " and accuracy estimated without labels at 1 step"
    )


def test_a_rollout_that_judged_no_quality_says_why() -> None:
    assert quality_judged(_rollout({})) == "accuracy not judged: too little feedback"
    assert quality_judged(_rollout({}, judge_estimated=False)) == (
        "accuracy not judged: too little feedback, and judge_estimated is off"
    )
