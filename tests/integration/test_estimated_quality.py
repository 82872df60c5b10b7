"""Quality estimated without labels (CBPE), end to end on a real platform in one process.

Real scikit-learn logistic regressions, converted to ONNX, serve a stream whose labels come from a
known logistic truth. No feedback is sent while they serve: a rollout judged on the estimate
rolls a worse candidate back and promotes an equal one; the estimate read window by window over
HTTP is held, afterwards, against the accuracy the withheld labels give. Rollouts are stepped
with ``step_once(now=...)``; the windows' clock is driven by the test, never waited on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference import records
from app.modules.inference.service import LocalInferenceService
from app.modules.inference.settings import InferenceSettings
from app.modules.monitoring import service as monitoring_service
from app.modules.monitoring.settings import MonitoringSettings
from contracts.common import Tensor
from contracts.inference import GetRollout, Predict, Rollout, RolloutPolicy, StartRollout
from contracts.monitoring import SubmitFeedback
from contracts.registry import GetAlias, RegisterVersion, SetAlias

sklearn_linear = pytest.importorskip("sklearn.linear_model")
skl2onnx = pytest.importorskip("skl2onnx")
data_types = pytest.importorskip("skl2onnx.common.data_types")

MODEL = "credit-model"
DEPLOYMENT = "credit"
WEIGHTS = np.array([2.0, -1.5, 1.0])
BIAS = -0.5
CENTRE = np.array([1.5, -1.0, 0.5])
"""Where the inputs sit before the shift; the shift moves them toward the decision boundary."""
POLICY = RolloutPolicy(
    steps=[25.0, 50.0, 100.0],
    interval_s=60.0,
    min_requests=5,
    latency_slack_s=1.0,  # latencies of a few ms on a shared test machine are noise
    judge_estimated=True,
)
HOUR = 3600.0


def _truth(x: np.ndarray) -> np.ndarray:
    """The chance that a row's label is 1: the world the models learn and the labels come from."""
    return np.asarray(1 / (1 + np.exp(-(x @ WEIGHTS + BIAS))))


def sample(
    rng: np.random.Generator, rows: int, centre: np.ndarray, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    x = (rng.normal(size=(rows, 3)) * scale + centre).astype(np.float32)
    return x, (rng.random(rows) < _truth(x)).astype(int)


def fit(seed: int, *, blind_to_first: bool = False) -> Any:
    """A logistic regression on 4,000 rows of the unshifted stream; ``blind_to_first`` blanks
    the first (strongest) feature while it learns, so it never uses it."""
    x, y = sample(np.random.default_rng(seed), 4000, CENTRE * 0.5)
    if blind_to_first:
        x = x * np.array([0.0, 1.0, 1.0], dtype=np.float32)
    return sklearn_linear.LogisticRegression().fit(x, y)


def to_onnx(model: Any) -> bytes:
    converted = skl2onnx.convert_sklearn(
        model,
        initial_types=[("x", data_types.FloatTensorType([None, 3]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(converted.SerializeToString())


def _realised_accuracy(model: Any, seed: int) -> float:
    x, y = sample(np.random.default_rng(seed), 20_000, CENTRE * 0.5)
    return float(np.mean(model.predict(x) == y))


class Q:
    """The platform's clients, the inference service's stepper and recorder, and HTTP."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.registry = platform.client("registry", caller="tests")
        self.inference = platform.client("inference", caller="tests")
        self.monitoring = platform.client("monitoring", caller="tests")
        service = platform.built["inference"].service
        assert isinstance(service, LocalInferenceService)
        assert service.rollouts is not None
        self.service = service
        self.rollouts = service.rollouts

    async def flush(self) -> None:
        await self.service.records.flush()

    async def step(self, rollout: Rollout) -> Rollout:
        """Flush the records, run the stepper at the rollout's next check, answer it after."""
        await self.flush()
        assert rollout.next_check_at is not None
        await self.rollouts.step_once(now=rollout.next_check_at)
        after: Rollout = await self.inference.get_rollout(GetRollout(id=rollout.id))
        return after


@pytest.fixture
async def q(tmp_path: Path) -> AsyncIterator[Q]:
    settings = Settings(
        data_dir=tmp_path, modules=("registry", "monitoring", "inference")
    ).with_module(
        InferenceSettings(prediction_log_sample=0.0),
        MonitoringSettings(alert_interval_s=0, drift_interval_s=0),
    )
    async with Platform(settings) as platform:
        yield Q(platform)


# --- a rollout judged on the estimate ---------------------------------------------------------


async def register(q: Q, candidate: Any) -> None:
    """Version 1 (the champion, a calibrated logistic regression) and ``candidate`` as
    version 2."""
    await q.registry.register_version(RegisterVersion(name=MODEL, artifact=to_onnx(fit(seed=0))))
    await q.registry.register_version(RegisterVersion(name=MODEL, artifact=to_onnx(candidate)))
    await q.registry.set_alias(SetAlias(name=MODEL, alias="champion", version=1))


async def drive(q: Q, rollout: Rollout) -> Rollout:
    """Step ``rollout`` until it ends, with traffic at every step and feedback never. Requests
    carry 25 rows each, so the estimate of each side rests on hundreds of rows."""
    rng = np.random.default_rng(42)
    while rollout.status == "running":
        for i in range(40):
            x, _ = sample(rng, 25, CENTRE * 0.5)  # the labels are withheld: never sent
            rows = Tensor.from_numpy(x)
            await q.inference.predict(
                Predict(model=DEPLOYMENT, inputs={"x": rows}, sticky_key=f"user-{i}")
            )
        rollout = await q.step(rollout)
    return rollout


async def _start(q: Q, policy: RolloutPolicy) -> Rollout:
    started: Rollout = await q.inference.start_rollout(
        StartRollout(deployment=DEPLOYMENT, candidate=f"{MODEL}:2", policy=policy)
    )
    return started


async def test_a_rollout_judged_on_the_estimate_rolls_back_a_worse_candidate(q: Q) -> None:
    """The candidate learnt without the strongest feature (blanked while it trained). It is
    still calibrated, so it is honestly less sure of each row, and that is what CBPE reads: its
    expected accuracy (the mean of its top probabilities) is lower. It is also really less
    accurate (checked below against labels the platform never sees), which is the point of
    judging it on the estimate. A candidate worse only by being confidently wrong would escape
    CBPE: the estimate assumes calibrated probabilities."""
    worse = fit(seed=0, blind_to_first=True)
    assert _realised_accuracy(worse, seed=9) < _realised_accuracy(fit(seed=0), seed=9) - 0.05

    await register(q, worse)
    rollout = await drive(q, await _start(q, POLICY))

    assert (rollout.status, rollout.percent) == ("rolled_back", 0)
    last = rollout.history[-1]
    assert [s.action for s in rollout.history] == ["start", "rollback"]
    assert "accuracy estimated without labels" in last.reason, last.reason
    ours = last.figures["candidate_estimated_accuracy"]
    theirs = last.figures["baseline_estimated_accuracy"]
    assert ours < theirs - POLICY.max_quality_drop
    assert "candidate_accuracy" not in last.figures  # no feedback: nothing was realised
    champion = await q.registry.get_alias(GetAlias(name=MODEL, alias="champion"))
    assert champion.version == 1


async def test_a_rollout_judged_on_the_estimate_promotes_an_equal_candidate(q: Q) -> None:
    equal = fit(seed=1)  # the same recipe on another sample of the same stream

    await register(q, equal)
    rollout = await drive(q, await _start(q, POLICY))

    assert (rollout.status, rollout.percent) == ("promoted", 100)
    assert [s.action for s in rollout.history] == ["start", "advance", "advance", "promote"]
    judged = rollout.history[1]  # at 25 percent, with both sides served
    assert judged.figures["candidate_estimated_accuracy"] == pytest.approx(
        judged.figures["baseline_estimated_accuracy"], abs=POLICY.max_quality_drop
    )
    champion = await q.registry.get_alias(GetAlias(name=MODEL, alias="champion"))
    assert champion.version == 2


async def test_without_judge_estimated_the_worse_candidate_goes_through(q: Q) -> None:
    """The same worse candidate and traffic under a policy that does not judge on the estimate:
    with no labels nothing else tells the two apart, and it is promoted. The estimate is what
    rolled it back above."""
    await register(q, fit(seed=0, blind_to_first=True))
    unasked = msgspec.structs.replace(POLICY, judge_estimated=False)

    rollout = await drive(q, await _start(q, unasked))

    assert rollout.status == "promoted"
    assert all("candidate_estimated_accuracy" not in s.figures for s in rollout.history)


# --- windows of a shifted stream, labels withheld -----------------------------------------------


class DrivenClock:
    """The wall clock plus an offset the test sets: monitoring reads it, and inference stamps
    its prediction records with it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> DrivenClock:
    driven = DrivenClock()

    class DrivenDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.fromtimestamp(driven.time(), tz=tz or UTC)

    monkeypatch.setattr(monitoring_service, "time", driven)
    monkeypatch.setattr(records, "datetime", DrivenDatetime)
    return driven


WINDOWS = 10
ROWS_PER_WINDOW = 150


def _shifted_window(w: int) -> tuple[np.ndarray, np.ndarray]:
    """Window ``w`` of a stream drifting from the training inputs to the decision boundary
    (and tighter around it): the model's accuracy falls from about 0.93 to about 0.7."""
    rng = np.random.default_rng(100 + w)
    return sample(rng, ROWS_PER_WINDOW, CENTRE * (1 - w / (WINDOWS - 1)), 1 - 0.06 * w)


async def test_estimated_accuracy_tracks_the_accuracy_labels_show_later(
    q: Q, clock: DrivenClock
) -> None:
    await q.registry.register_version(RegisterVersion(name=MODEL, artifact=to_onnx(fit(seed=0))))
    transport = httpx.ASGITransport(app=create_app(q.platform, host="127.0.0.1"))
    http = httpx.AsyncClient(transport=transport, base_url="http://q")
    estimated_path = f"/v1/monitoring/models/{MODEL}/estimated"
    served: list[tuple[list[str], np.ndarray]] = []
    estimates = []
    async with http:
        for w in range(WINDOWS):  # window w is served (WINDOWS - w) hours ago
            clock.offset = (w - WINDOWS) * HOUR
            x, labels = _shifted_window(w)
            ids = []
            for row in x:  # one row a prediction: feedback is given per prediction
                rows = Tensor.from_numpy(row[None, :])
                answer = await q.inference.predict(Predict(model=MODEL, inputs={"x": rows}))
                ids.append(answer.prediction_id)
            await q.flush()
            served.append((ids, labels))
            read = await http.get(estimated_path, params={"window": "30m"})
            assert read.status_code == 200, read.text
            estimate = read.json()
            assert estimate["count"] == ROWS_PER_WINDOW  # this window's predictions only
            assert "calibration unknown" in estimate["warnings"][0]  # no label yet
            estimates.append(estimate)

        clock.offset = 0.0  # afterwards: the labels arrive
        for ids, labels in served:
            for prediction_id, label in zip(ids, labels, strict=True):
                await q.monitoring.submit_feedback(
                    SubmitFeedback(prediction_id=prediction_id, label=int(label))
                )
        # ten one-hour buckets, each centred on one window's predictions
        clock.offset = -HOUR / 2
        read = await http.get(
            f"/v1/monitoring/models/{MODEL}/realised",
            params={"window": f"{WINDOWS}h", "buckets": WINDOWS},
        )
        assert read.status_code == 200, read.text
        realised = read.json()
        after = (await http.get(estimated_path, params={"window": "12h"})).json()

    points = realised["points"]
    assert [p["count"] for p in points] == [ROWS_PER_WINDOW] * WINDOWS
    within = [
        e["lower"]["accuracy"] <= p["metrics"]["accuracy"] <= e["upper"]["accuracy"]
        for e, p in zip(estimates, points, strict=True)
    ]
    assert sum(within) >= 9, [
        (e["lower"]["accuracy"], p["metrics"]["accuracy"], e["upper"]["accuracy"])
        for e, p in zip(estimates, points, strict=True)
    ]
    # the shift shows in the estimate before any label: it falls from the first window to the
    # last by more than the band is wide
    first, last = estimates[0], estimates[-1]
    assert last["upper"]["accuracy"] < first["lower"]["accuracy"]
    # with the labels in, calibration is measured and the model is found calibrated
    assert after["calibration_rows"] == WINDOWS * ROWS_PER_WINDOW
    assert after["calibration_error"] < 0.05
    assert after["warnings"] == []
