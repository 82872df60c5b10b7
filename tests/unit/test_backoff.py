"""Backing off through a run of failures: capped waits, and one log line at each end."""

from __future__ import annotations

import logging

import pytest
import redis.exceptions

from app.kernel.backoff import Backoff


def test_a_long_outage_costs_two_log_lines_and_capped_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = Backoff("the relay pass", logging.getLogger("quarry.test"), base_s=0.1, cap_s=2.0)
    with caplog.at_level(logging.INFO, logger="quarry.test"):
        waits = [backoff.failed(redis.exceptions.ConnectionError("refused")) for _ in range(50)]
        backoff.succeeded()
        backoff.succeeded()

    assert 0.1 <= waits[0] <= 0.125
    assert all(a <= b * 2.5 for a, b in zip(waits[1:], waits, strict=False))
    assert max(waits) <= 2.0 * 1.25
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert [(level, exc) for level, _, exc in lines] == [("WARNING", None), ("INFO", None)]
    assert "the relay pass failed: redis is unreachable" in lines[0][1]
    assert "succeeded again after 50 failed attempts" in lines[1][1]
    assert not backoff.failing


def test_a_failure_that_is_not_an_outage_keeps_its_stack_trace_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = Backoff("a round of x", logging.getLogger("quarry.test"))
    with caplog.at_level(logging.INFO, logger="quarry.test"):
        for _ in range(3):
            backoff.failed(KeyError("bug"))

    [line] = caplog.records
    assert line.levelname == "ERROR"
    assert line.exc_info is not None
