"""Drift reports speak of the columns the user knows, in human units.

A model trained through a feature service with ``standardize`` and ``one_hot`` transforms takes
z-scores and one 0/1 column per category; its drift report names the features instead (one
categorical column for the one-hot feature, counted once in the drifted share), and says how
long its window is the way a person would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from app.bootstrap import Platform
from app.kernel.settings import Settings
from app.modules.features.transforms import apply, fit
from app.modules.inference.settings import InferenceSettings
from app.modules.monitoring.report_html import render
from app.modules.monitoring.units import duration
from app.modules.training.profile import reference_profile
from contracts.common import Tensor
from contracts.features import FeatureDType, OneHot, Standardize
from contracts.inference import Predict
from contracts.monitoring import DriftReport, GetDriftReport, RunDriftCheck
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx

FEATURES = ["trips:distance", "trips:city"]
DTYPES: dict[str, FeatureDType] = {"trips:distance": "float", "trips:city": "string"}
TRANSFORMS = [Standardize(input="trips:distance"), OneHot(input="trips:city")]
CITIES = ["oslo", "paris", "rome"]


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    settings = Settings(
        data_dir=tmp_path, modules=("registry", "monitoring", "inference")
    ).with_module(InferenceSettings(prediction_log_sample=1.0))
    async with Platform(settings) as platform:
        yield platform


def _raw(rows: int, seed: int, cities: list[str]) -> dict[str, list[object]]:
    rng = np.random.default_rng(seed)
    return {
        "trips:distance": [float(v) for v in rng.normal(10.0, 2.0, size=rows)],
        "trips:city": [str(c) for c in rng.choice(cities, size=rows)],
    }


async def test_one_hot_and_standardized_features_are_reported_as_the_user_sent_them(
    platform: Platform,
) -> None:
    training = _raw(600, seed=1, cities=CITIES)
    params, columns = fit(FEATURES, TRANSFORMS, DTYPES, training)
    assert columns == ["trips:distance", "trips:city=oslo", "trips:city=paris", "trips:city=rome"]
    x = apply(FEATURES, TRANSFORMS, DTYPES, params, columns, training)
    outputs = {"y": x @ np.ones((4, 2), dtype=np.float32)}
    profile = reference_profile(columns, x, outputs, task=None, seed=1)
    registry = platform.client("registry", caller="tests")
    await registry.register_version(
        RegisterVersion(name="eta", artifact=linear_onnx(4, 2), reference_profile=profile)
    )
    # the same distances, but every trip now starts in Oslo
    served = apply(FEATURES, TRANSFORMS, DTYPES, params, columns, _raw(300, 2, ["oslo"]))
    inference = platform.client("inference", caller="tests")
    for start in range(0, 300, 20):
        batch = Tensor.from_numpy(np.ascontiguousarray(served[start : start + 20]))
        await inference.predict(Predict(model="eta", inputs={"x": batch}))
    await platform.built["inference"].service.records.flush()

    monitoring = platform.client("monitoring", caller="tests")
    report = await monitoring.run_drift_check(RunDriftCheck(model="eta", window_s=300))

    assert [(f.name, f.kind, f.drifted) for f in report.features] == [
        ("trips:distance", "numerical", False),
        ("trips:city", "categorical", True),
    ]
    assert report.share_drifted == 0.5  # one feature of two, not three columns of four
    page = await monitoring.render_drift_report(GetDriftReport(id=report.id))
    assert 'aria-label="trips:city: reference vs current"' in page.html
    assert "trips:city=oslo" not in page.html
    assert ">paris</text>" in page.html  # the categories are the chart's labels
    assert "Window: <b>5 minutes</b>" in page.html
    assert "<h2>Service, the 5 minutes before the report</h2>" in page.html


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3.36857, "3.4 s"),
        (0.25, "0.25 s"),
        (45, "45 s"),
        (300, "5 minutes"),
        (60, "1 minute"),
        (3600, "1 hour"),
        (5400, "1 h 30 min"),
        (86400 * 2, "2 days"),
    ],
)
def test_windows_read_in_human_units(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_short_time_axis_shows_seconds_and_a_long_one_the_date() -> None:
    start = datetime(2026, 5, 1, 12, 30, 5, tzinfo=UTC)

    def page(span: timedelta) -> str:
        report = DriftReport(
            id="r",
            model="eta",
            version=1,
            created_at=start + span,
            window_s=span.total_seconds(),
            share_threshold=0.5,
            status="ok",
            dataset_drift=False,
            share_drifted=0.0,
            reference_rows=0,
            current_rows=0,
        )
        series = [(start, 1.0), (start + span, 2.0)]
        return render(
            report, reference=None, current=None, columns=[], latency=series, error_rate=series
        )

    short = page(timedelta(seconds=3.4))
    assert ">12:30:05</text>" in short
    assert ">12:30:08</text>" in short
    assert "Window: <b>3.4 s</b>" in short
    assert ">2026-05-02 12:30</text>" in page(timedelta(days=1))
