"""Live figures keep the newest records of each version in a fixed ring: the oldest go first,
records older than the window do not count, and a version with none left is dropped."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from app.modules.monitoring.live import WINDOW_S, LiveFigures
from contracts.inference import PredictionRecord


def record(
    n: int, *, version: int | None = 1, latency_s: float = 0.01, ok: bool = True, age_s: float = 0.0
) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=f"p{n}",
        model="m",
        version=version,
        status="ok" if ok else "error",
        latency_s=latency_s,
        at=datetime.fromtimestamp(time.time() - age_s, UTC),
    )


def test_the_newest_records_of_each_version_count_across_the_ring_end() -> None:
    live = LiveFigures(slo_s=0.05, capacity=10)
    live.add([record(i, latency_s=1.0, ok=False) for i in range(7)])  # all overwritten below
    live.add([record(i, latency_s=0.01) for i in range(6)])
    live.add([record(i, latency_s=0.1) for i in range(4)] + [record(9, version=2)])

    figures = live.figures()

    assert figures[("m", "1")]["qps"] == pytest.approx(10 / WINDOW_S)
    assert figures[("m", "1")]["error_rate"] == 0
    assert figures[("m", "1")]["slo"] == pytest.approx(0.6)  # six of 0.01 s, four of 0.1 s
    assert figures[("m", "1")]["p99"] == pytest.approx(0.1)
    assert figures[("m", "2")]["qps"] == pytest.approx(1 / WINDOW_S)
    assert figures[("m", "all")]["qps"] == pytest.approx(11 / WINDOW_S)


def test_a_batch_larger_than_the_ring_keeps_its_newest_records() -> None:
    live = LiveFigures(slo_s=0.05, capacity=4)
    live.add([record(i, ok=i < 20) for i in range(23)])

    assert live.figures()[("m", "1")]["error_rate"] == pytest.approx(3 / 4)


def test_records_older_than_the_window_do_not_count_and_an_idle_version_goes() -> None:
    live = LiveFigures(slo_s=0.05, capacity=100)
    live.add([record(1, version=1, age_s=WINDOW_S + 5), record(2, version=2, ok=False)])
    live.add([record(3, version=2, age_s=WINDOW_S + 5)])

    figures = live.figures()

    assert ("m", "1") not in figures
    assert figures[("m", "2")]["error_rate"] == 1
    assert figures[("m", "all")]["qps"] == pytest.approx(1 / WINDOW_S)
    live.add([record(4, version=2, age_s=WINDOW_S + 5)])
    assert ("m", "2") in live.figures()  # its one record in the window still counts
