"""A rollout step's verdict: the candidate against the baseline, as :class:`RolloutPolicy` says.

Pure: the figures come in (monitoring's summaries and realised metrics), a verdict with its
reason goes out. No I/O, so every rule is tested without a clock or a database. Where too little
feedback arrived to judge quality, a policy with ``judge_estimated`` takes the quality monitoring
estimates from a classifier's probabilities (the summaries' ``estimated``) instead.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

from contracts.common import InvalidInput
from contracts.inference import RolloutPolicy
from contracts.monitoring import RealisedMetrics, Summary

__all__ = ["LOWER_IS_BETTER", "Verdict", "check_policy", "judge"]

LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss", "brier"})
"""Realised metrics where a smaller figure is the better one (all others: larger is better)."""


@dataclass(frozen=True)
class Verdict:
    """``passed``: the candidate may take more traffic; ``hold``: not enough to judge yet."""

    action: Literal["passed", "hold", "rollback"]
    reason: str
    figures: dict[str, float] = field(default_factory=dict)


def check_policy(policy: RolloutPolicy) -> None:
    """Refuse a policy that cannot run: steps ascending in (0, 100] ending at 100, sane limits."""
    steps = policy.steps
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps):
        raise InvalidInput(
            "policy.steps must be percentages in (0, 100] ending at 100, e.g. [5, 25, 50, 100]",
            details={"field": "policy.steps"},
        )
    if any(a >= b for a, b in itertools.pairwise(steps)):
        raise InvalidInput("policy.steps must ascend", details={"field": "policy.steps"})
    for name in ("interval_s", "max_latency_ratio"):
        value = getattr(policy, name)
        if not (math.isfinite(value) and value > 0):
            raise InvalidInput(f"policy.{name} must be above 0", details={"field": name})
    for name in ("max_error_rate_increase", "latency_slack_s", "max_quality_drop"):
        value = getattr(policy, name)
        if not (math.isfinite(value) and value >= 0):
            raise InvalidInput(f"policy.{name} must be 0 or more", details={"field": name})
    if policy.min_requests < 0 or policy.min_feedback < 0:
        raise InvalidInput("policy.min_requests and policy.min_feedback must be 0 or more")


def judge(
    policy: RolloutPolicy,
    candidate: Summary,
    baseline: Summary,
    quality: tuple[RealisedMetrics, RealisedMetrics] | None = None,
) -> Verdict:
    """The verdict over one step's traffic; ``quality`` is (candidate, baseline) feedback."""
    figures = _figures(candidate, baseline)
    if candidate.requests < policy.min_requests:
        return Verdict(
            "hold",
            f"candidate had {candidate.requests} requests in this step,"
            f" fewer than the {policy.min_requests} needed to judge it",
            figures,
        )
    if candidate.error_rate > baseline.error_rate + policy.max_error_rate_increase:
        return Verdict(
            "rollback",
            f"candidate error rate {candidate.error_rate:.2f} exceeds the baseline's"
            f" {baseline.error_rate:.2f} by more than {policy.max_error_rate_increase:.2f}",
            figures,
        )
    slow = _latency_problem(policy, candidate, baseline)
    if slow is not None:
        return Verdict("rollback", slow, figures)
    worse = _quality_problem(policy, quality, figures)
    if worse is None and policy.judge_estimated and not _judged_on_feedback(policy, quality):
        worse = _estimated_quality_problem(policy, candidate, baseline, figures)
    if worse is not None:
        return Verdict("rollback", worse, figures)
    return Verdict(
        "passed",
        f"candidate within limits over {candidate.requests} requests: error rate"
        f" {candidate.error_rate:.2f} (baseline {baseline.error_rate:.2f})",
        figures,
    )


def _figures(candidate: Summary, baseline: Summary) -> dict[str, float]:
    figures = {
        "candidate_requests": float(candidate.requests),
        "baseline_requests": float(baseline.requests),
        "candidate_error_rate": candidate.error_rate,
        "baseline_error_rate": baseline.error_rate,
    }
    if candidate.latency_p99_s is not None:
        figures["candidate_latency_p99_s"] = candidate.latency_p99_s
    if baseline.latency_p99_s is not None:
        figures["baseline_latency_p99_s"] = baseline.latency_p99_s
    return figures


def _latency_problem(policy: RolloutPolicy, candidate: Summary, baseline: Summary) -> str | None:
    ours, theirs = candidate.latency_p99_s, baseline.latency_p99_s
    if ours is None or theirs is None:  # the baseline had no traffic (e.g. at 100 percent)
        return None
    limit = theirs * policy.max_latency_ratio + policy.latency_slack_s
    if ours <= limit:
        return None
    return (
        f"candidate p99 latency {ours:.3f} s exceeds {policy.max_latency_ratio:g} times the"
        f" baseline's {theirs:.3f} s plus {policy.latency_slack_s:g} s"
    )


def _quality_problem(
    policy: RolloutPolicy,
    quality: tuple[RealisedMetrics, RealisedMetrics] | None,
    figures: dict[str, float],
) -> str | None:
    if quality is None:
        return None
    candidate, baseline = quality
    metric = policy.quality_metric
    if min(candidate.count, baseline.count) < policy.min_feedback:
        return None
    if metric not in candidate.metrics or metric not in baseline.metrics:
        return None
    ours, theirs = candidate.metrics[metric], baseline.metrics[metric]
    figures |= {f"candidate_{metric}": ours, f"baseline_{metric}": theirs}
    figures |= {"candidate_feedback": float(candidate.count)}
    figures |= {"baseline_feedback": float(baseline.count)}
    return _worse(policy, metric, ours, theirs)


def _judged_on_feedback(
    policy: RolloutPolicy, quality: tuple[RealisedMetrics, RealisedMetrics] | None
) -> bool:
    """Whether both sides had the feedback to judge ``quality_metric`` by."""
    if quality is None:
        return False
    candidate, baseline = quality
    metric = policy.quality_metric
    enough = min(candidate.count, baseline.count) >= policy.min_feedback
    return enough and metric in candidate.metrics and metric in baseline.metrics


def _estimated_quality_problem(
    policy: RolloutPolicy, candidate: Summary, baseline: Summary, figures: dict[str, float]
) -> str | None:
    metric = policy.quality_metric
    if metric not in candidate.estimated or metric not in baseline.estimated:
        return None
    ours, theirs = candidate.estimated[metric], baseline.estimated[metric]
    figures |= {f"candidate_estimated_{metric}": ours, f"baseline_estimated_{metric}": theirs}
    return _worse(policy, metric, ours, theirs, how=" estimated without labels")


def _worse(
    policy: RolloutPolicy, metric: str, ours: float, theirs: float, how: str = ""
) -> str | None:
    """Why the candidate's ``metric`` is worse than the baseline's by more than the policy
    allows; ``None`` when it is not."""
    lower = metric in LOWER_IS_BETTER
    drop = ours - theirs if lower else theirs - ours
    if drop <= policy.max_quality_drop:
        return None
    side = "above" if lower else "below"
    return (
        f"candidate {metric}{how} {ours:.3f} is {side} the baseline's {theirs:.3f}"
        f" by more than {policy.max_quality_drop:g}"
    )
