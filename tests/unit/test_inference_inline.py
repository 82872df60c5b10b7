"""Small models stay on the event loop: a model measured fast runs on the caller's thread when
the batcher is idle, and under concurrency the requests of one loop turn run as one batch on the
loop's thread; a batch expected to take longer goes to a runner thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.kernel.settings import Settings
from app.modules.inference.batching import INLINE_MAX_S, INLINE_STREAK, Batcher
from app.modules.inference.loading import Loader
from app.modules.inference.settings import InferenceSettings
from contracts.common import InternalError
from contracts.registry import Signature, TensorSpec

Feeds = dict[str, np.ndarray[Any, Any]]

ROWS = Signature(
    inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, 2])],
    outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1, 2])],
)


class ThreadRecordingModel:
    """``y = x + 1``; records the thread and the rows of every run, fails on a negative value."""

    name = "fake"
    version = 1
    signature = ROWS

    def __init__(self) -> None:
        self.runs: list[tuple[int, int]] = []

    def run(self, feeds: Feeds) -> Feeds:
        x = feeds["x"]
        self.runs.append((threading.get_ident(), len(x)))
        if (x < 0).any():
            raise RuntimeError("negative input")
        return {"y": x + 1}


def row(value: float) -> Feeds:
    return {"x": np.full((1, 2), value, dtype=np.float32)}


@pytest.fixture
async def model() -> ThreadRecordingModel:
    return ThreadRecordingModel()


@pytest.fixture
async def batcher(model: ThreadRecordingModel) -> AsyncIterator[Batcher]:
    # Any measured run counts as small: which path is taken must not depend on the machine.
    made = Batcher(
        model, max_batch_size=64, max_queue_delay_ms=0, max_queue_rows=4096, inline_max_s=60.0
    )
    yield made
    await made.close()


async def test_a_fast_model_runs_on_the_callers_thread_after_its_first_run(
    model: ThreadRecordingModel, batcher: Batcher
) -> None:
    loop_thread = threading.get_ident()

    first = await batcher.submit(row(1), 1, None)
    later = [await batcher.submit(row(i), 1, None) for i in range(3)]

    np.testing.assert_array_equal(first["y"], row(2)["x"])
    for i, outputs in enumerate(later):
        np.testing.assert_array_equal(outputs["y"], row(i + 1)["x"])
    threads = [thread for thread, _ in model.runs]
    assert threads[0] != loop_thread  # not measured yet: the runner thread
    assert threads[1:] == [loop_thread] * 3
    assert batcher.inline_runs == 3
    assert (batcher.batches_run, batcher.rows_run) == (4, 4)


async def test_concurrent_requests_are_batched_on_the_loop(
    model: ThreadRecordingModel, batcher: Batcher
) -> None:
    await batcher.submit(row(0), 1, None)  # measured
    model.runs.clear()
    loop_thread = threading.get_ident()

    answers = await asyncio.gather(*(batcher.submit(row(i), 1, None) for i in range(5)))

    for i, outputs in enumerate(answers):
        np.testing.assert_array_equal(outputs["y"], row(i + 1)["x"])
    # The first request of the loop turn runs inline; the four after it queue and run as one
    # batch at the end of the turn, on the loop's thread too.
    assert model.runs == [(loop_thread, 1), (loop_thread, 4)]
    assert (batcher.inline_runs, batcher.loop_batches) == (1, 1)


async def test_one_row_batches_queued_in_a_turn_all_run_at_its_end() -> None:
    turns = 0
    seen: list[int] = []

    class TurnRecordingModel(ThreadRecordingModel):
        def run(self, feeds: Feeds) -> Feeds:
            seen.append(turns)
            return super().run(feeds)

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    model = TurnRecordingModel()
    batcher = Batcher(
        model, max_batch_size=1, max_queue_delay_ms=0, max_queue_rows=4096, inline_max_s=60.0
    )
    try:
        await batcher.submit(row(0), 1, None)  # measured
        ticking = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        seen.clear()
        answers = await asyncio.gather(*(batcher.submit(row(i), 1, None) for i in range(5)))
        ticking.cancel()
    finally:
        await batcher.close()

    for i, outputs in enumerate(answers):
        np.testing.assert_array_equal(outputs["y"], row(i + 1)["x"])
    # One inline, then the four queued meanwhile, one batch each, in one turn of the loop (not
    # one a turn, which would leave requests waiting on the loop's other work).
    assert (batcher.inline_runs, batcher.loop_batches) == (1, 4)
    assert len(set(seen[1:])) == 1


class SteadyModel(ThreadRecordingModel):
    """Takes 10 ms a run whatever its rows, so per row a run looks cheaper the more it holds."""

    def run(self, feeds: Feeds) -> Feeds:
        time.sleep(0.01)  # the model's own run time, not a wait for anything
        return super().run(feeds)


async def test_a_batch_expected_to_take_long_runs_on_a_runner() -> None:
    model = SteadyModel()
    # One row (10 ms) is short; 30 rows are expected to take 30 x 10 ms, over 0.2 s.
    batcher = Batcher(
        model, max_batch_size=64, max_queue_delay_ms=0, max_queue_rows=4096, inline_max_s=0.2
    )
    loop_thread = threading.get_ident()
    try:
        await batcher.submit(row(0), 1, None)  # measured, on the runner
        await batcher.submit(row(0), 1, None)  # inline
        model.runs.clear()
        answers = await asyncio.gather(*(batcher.submit(row(i), 1, None) for i in range(31)))
    finally:
        await batcher.close()

    for i, outputs in enumerate(answers):
        np.testing.assert_array_equal(outputs["y"], row(i + 1)["x"])
    assert model.runs[0] == (loop_thread, 1)
    assert [rows for _, rows in model.runs[1:]] == [30]
    assert model.runs[1][0] != loop_thread
    assert batcher.loop_batches == 0


async def test_a_model_measured_slow_never_runs_inline(model: ThreadRecordingModel) -> None:
    batcher = Batcher(
        model, max_batch_size=64, max_queue_delay_ms=0, max_queue_rows=4096, inline_max_s=0.0
    )
    try:
        for i in range(3):
            await batcher.submit(row(i), 1, None)
    finally:
        await batcher.close()

    assert batcher.inline_runs == 0
    assert threading.get_ident() not in {thread for thread, _ in model.runs}


async def test_a_failure_inline_is_the_callers_error(
    model: ThreadRecordingModel, batcher: Batcher
) -> None:
    await batcher.submit(row(0), 1, None)

    with pytest.raises(InternalError, match="negative input"):
        await batcher.submit(row(-1), 1, None)
    assert batcher.inline_runs == 1
    np.testing.assert_array_equal((await batcher.submit(row(2), 1, None))["y"], row(3)["x"])


async def test_a_caller_in_a_tight_loop_lets_the_event_loop_turn(batcher: Batcher) -> None:
    await batcher.submit(row(0), 1, None)
    turns = 0

    async def background() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(background())
    await asyncio.sleep(0)  # the ticker starts
    started = turns
    for i in range(4 * INLINE_STREAK):
        await batcher.submit(row(i), 1, None)
    ticker.cancel()

    assert batcher.inline_runs == 4 * INLINE_STREAK
    assert turns - started >= 3  # one turn per streak at least, though nothing was awaited


@pytest.mark.parametrize(("inline_max_us", "on_the_loop"), [(0, False), (10_000, True)])
async def test_quarry_inference_inline_max_us_is_what_the_served_batchers_take(
    tmp_path: Path, inline_max_us: int, on_the_loop: bool
) -> None:
    settings = Settings(data_dir=tmp_path).with_module(
        InferenceSettings(inline_max_us=inline_max_us, artifact_cache_bytes=0)
    )
    loader = Loader(registry=None, settings=settings, logger=logging.getLogger("test"))  # type: ignore[arg-type]
    model = ThreadRecordingModel()
    batcher = loader._batcher(model)  # type: ignore[arg-type]
    try:
        for i in range(3):
            await batcher.submit(row(i), 1, None)
    finally:
        await batcher.close()

    assert (batcher.inline_runs > 0) is on_the_loop
    assert (threading.get_ident() in {thread for thread, _ in model.runs}) is on_the_loop


def test_the_settings_default_is_the_batchers() -> None:
    assert InferenceSettings().inline_max_us / 1e6 == INLINE_MAX_S
