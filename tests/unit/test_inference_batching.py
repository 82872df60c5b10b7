"""Adaptive batching: concurrent requests share session runs and each gets exactly its rows.

A gated fake model controls timing: its ``run`` blocks on a ``threading.Event`` until the test
opens the gate, so the queue fills deterministically while the only runner is busy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from app.modules.inference.batching import Batcher
from contracts.common import DeadlineExceeded, InternalError, Unavailable, UnprocessableInput
from contracts.registry import Signature, TensorSpec

Array = np.ndarray[Any, Any]
Feeds = dict[str, Array]

ROWS = Signature(
    inputs=[TensorSpec(name="x", dtype="FP32", shape=[-1, -1])],
    outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1, -1])],
)


class GatedModel:
    """``y = 2x + 1``. ``run`` waits for the gate, records each batch, fails on ``poison``."""

    name = "fake"
    version = 1

    def __init__(self, signature: Signature = ROWS, *, poison: float | None = None) -> None:
        self.signature = signature
        self.poison = poison
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.batches: list[int] = []
        self.fed: list[Feeds] = []

    def run(self, feeds: Feeds) -> Feeds:
        self.entered.release()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        x = feeds["x"]
        self.batches.append(len(x))
        self.fed.append(feeds)
        if self.poison is not None and (x == self.poison).any():
            raise RuntimeError(f"[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : saw {self.poison}")
        return {"y": x * 2 + 1}


def row(value: float, width: int = 2, rows: int = 1) -> Feeds:
    return {"x": np.full((rows, width), value, dtype=np.float32)}


def expected(feeds: Feeds) -> Array:
    return feeds["x"] * 2 + 1


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop (no wall-clock wait) until ``condition`` holds."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Harness:
    """A batcher over a gated model, plus helpers to hold its runner and queue requests."""

    def __init__(self, model: GatedModel, **options: Any) -> None:
        self.model = model
        # Never on the caller's thread: a gated run there would block the loop (see
        # test_inference_inline.py for the fast path).
        settings = {
            "max_batch_size": 64,
            "max_queue_delay_ms": 0,
            "max_queue_rows": 4096,
            "inline_max_s": 0,
        }
        self.batcher = Batcher(model, **(settings | options))

    def submit(self, feeds: Feeds, deadline: float | None = None) -> asyncio.Task[Feeds]:
        rows = len(feeds["x"])
        return asyncio.ensure_future(self.batcher.submit(feeds, rows, deadline))

    async def hold(self) -> asyncio.Task[Feeds]:
        """Start a one-row request and keep the runner busy with it until :meth:`release`."""
        self.model.gate.clear()
        task = self.submit(row(0))
        entered = await asyncio.to_thread(self.model.entered.acquire, timeout=30)
        assert entered
        return task

    async def queue(
        self, *requests: Feeds, deadline: float | None = None
    ) -> list[asyncio.Task[Feeds]]:
        before = self.batcher.queued_rows
        tasks = [self.submit(feeds, deadline) for feeds in requests]
        rows = sum(len(feeds["x"]) for feeds in requests)
        await until(lambda: self.batcher.queued_rows == before + rows)
        return tasks

    def release(self) -> None:
        self.model.gate.set()


MakeHarness = Callable[..., Harness]


@pytest.fixture
async def make_harness() -> AsyncIterator[MakeHarness]:
    """Harnesses for the test; each is released and closed afterwards."""
    made: list[Harness] = []

    def make(model: GatedModel | None = None, **options: Any) -> Harness:
        made.append(Harness(model or GatedModel(), **options))
        return made[-1]

    yield make
    for harness in made:
        harness.release()
        await harness.batcher.close()


@pytest.fixture
def harness(make_harness: MakeHarness) -> Harness:
    return make_harness()


async def test_concurrent_rows_share_runs_and_each_gets_its_own_output(harness: Harness) -> None:
    held = await harness.hold()
    requests = [row(float(i)) for i in range(1, 64)]
    tasks = await harness.queue(*requests)
    harness.release()
    results = await asyncio.gather(held, *tasks)
    for feeds, result in zip([row(0), *requests], results, strict=True):
        np.testing.assert_array_equal(result["y"], expected(feeds))
    assert harness.model.batches == [1, 63]
    assert (harness.batcher.batches_run, harness.batcher.rows_run) == (2, 64)


async def test_64_concurrent_submits_take_fewer_runs_than_requests() -> None:
    model = GatedModel()
    batcher = Batcher(model, max_batch_size=64, max_queue_delay_ms=0, max_queue_rows=4096)
    requests = [row(float(i)) for i in range(64)]
    results = await asyncio.gather(*(batcher.submit(feeds, 1, None) for feeds in requests))
    for feeds, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], expected(feeds))
    assert batcher.batches_run < 64
    assert sum(model.batches) == 64
    await batcher.close()


async def test_a_request_alone_reaches_the_model_without_a_copy() -> None:
    model = GatedModel()
    batcher = Batcher(model, max_batch_size=64, max_queue_delay_ms=0, max_queue_rows=64)
    feeds = row(3.0, rows=5)
    await batcher.submit(feeds, 5, None)
    assert model.fed[0]["x"] is feeds["x"]
    await batcher.close()


async def test_batches_take_whole_requests_up_to_the_batch_size(make_harness: MakeHarness) -> None:
    harness = make_harness(GatedModel(), max_batch_size=4)
    held = await harness.hold()
    requests = [row(float(i), rows=n) for i, n in enumerate([2, 2, 3, 1, 1], start=1)]
    tasks = await harness.queue(*requests)
    harness.release()
    results = await asyncio.gather(held, *tasks)
    assert harness.model.batches == [1, 4, 4, 1]
    for feeds, result in zip(requests, results[1:], strict=True):
        np.testing.assert_array_equal(result["y"], expected(feeds))


async def test_a_request_larger_than_the_batch_size_runs_alone(make_harness: MakeHarness) -> None:
    harness = make_harness(GatedModel(), max_batch_size=4)
    held = await harness.hold()
    small, big, other = row(1.0), row(2.0, rows=10), row(3.0)
    tasks = await harness.queue(small, big, other)
    harness.release()
    results = await asyncio.gather(held, *tasks)
    assert harness.model.batches == [1, 2, 10]
    np.testing.assert_array_equal(results[2]["y"], expected(big))


async def test_a_full_queue_answers_unavailable_and_the_queued_rows_still_run(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(GatedModel(), max_queue_rows=4)
    held = await harness.hold()
    tasks = await harness.queue(*(row(float(i)) for i in range(4)))
    with pytest.raises(Unavailable, match="queue is full") as caught:
        await harness.batcher.submit(row(9.0), 1, None)
    assert caught.value.retry_after == 1
    harness.release()
    assert len(await asyncio.gather(held, *tasks)) == 5


async def test_a_request_over_the_queue_limit_is_unprocessable(harness: Harness) -> None:
    harness.batcher.max_queue_rows = 8
    with pytest.raises(UnprocessableInput, match="batch of 9 rows exceeds the limit 8"):
        await harness.batcher.submit(row(1.0, rows=9), 9, None)


async def test_requests_whose_deadline_passes_in_the_queue_are_dropped(
    make_harness: MakeHarness,
) -> None:
    now = [100.0]
    harness = make_harness(GatedModel(), clock=lambda: now[0])
    held = await harness.hold()
    late = (await harness.queue(row(1.0), deadline=101.0))[0]
    on_time = await harness.queue(row(2.0), row(3.0), deadline=105.0)
    now[0] = 102.0
    harness.release()
    with pytest.raises(DeadlineExceeded):
        await late
    results = await asyncio.gather(held, *on_time)
    np.testing.assert_array_equal(results[2]["y"], expected(row(3.0)))
    assert harness.model.batches == [1, 2]


async def test_a_deadline_already_past_is_refused_at_once(harness: Harness) -> None:
    with pytest.raises(DeadlineExceeded):
        await harness.batcher.submit(row(1.0), 1, deadline=0.0)
    assert harness.model.batches == []


async def test_a_failing_request_fails_alone_and_the_batcher_keeps_serving(
    make_harness: MakeHarness,
) -> None:
    harness = make_harness(GatedModel(poison=-1.0))
    held = await harness.hold()
    good, bad, also_good = await harness.queue(row(1.0), row(-1.0), row(2.0))
    harness.release()
    with pytest.raises(InternalError) as caught:
        await bad
    assert "RUNTIME_EXCEPTION : saw -1.0" in caught.value.message
    assert "Traceback" not in caught.value.message
    results = await asyncio.gather(held, good, also_good)
    np.testing.assert_array_equal(results[2]["y"], expected(row(2.0)))
    after = await harness.batcher.submit(row(5.0), 1, None)
    np.testing.assert_array_equal(after["y"], expected(row(5.0)))


async def test_a_model_error_of_quarry_kind_reaches_the_caller_unchanged() -> None:
    class Refusing(GatedModel):
        def run(self, feeds: Feeds) -> Feeds:
            raise UnprocessableInput("input 'x' holds an index out of range")

    batcher = Batcher(Refusing(), max_batch_size=8, max_queue_delay_ms=0, max_queue_rows=8)
    with pytest.raises(UnprocessableInput, match="index out of range"):
        await batcher.submit(row(1.0), 1, None)
    await batcher.close()


async def test_a_caller_that_goes_away_frees_its_rows_and_does_not_spoil_the_batch(
    harness: Harness,
) -> None:
    held = await harness.hold()
    first, gone, last = await harness.queue(row(1.0), row(2.0), row(3.0))
    gone.cancel()
    await until(gone.done)
    assert harness.batcher.queued_rows == 2
    harness.release()
    results = await asyncio.gather(held, first, last)
    np.testing.assert_array_equal(results[1]["y"], expected(row(1.0)))
    np.testing.assert_array_equal(results[2]["y"], expected(row(3.0)))
    assert harness.model.batches == [1, 2]
    assert gone.cancelled()


async def test_a_queue_delay_holds_a_part_full_batch_until_it_fills() -> None:
    model = GatedModel()
    batcher = Batcher(model, max_batch_size=4, max_queue_delay_ms=60_000, max_queue_rows=64)
    first = [asyncio.ensure_future(batcher.submit(row(float(i)), 1, None)) for i in range(3)]
    await until(lambda: batcher.queued_rows == 3)
    assert model.batches == []
    assert batcher.batches_run == 0
    results = await asyncio.gather(*first, batcher.submit(row(3.0), 1, None))
    assert model.batches == [4]
    np.testing.assert_array_equal(results[3]["y"], expected(row(3.0)))
    await batcher.close()


async def test_a_part_full_batch_goes_when_its_delay_is_over() -> None:
    model = GatedModel()
    batcher = Batcher(model, max_batch_size=64, max_queue_delay_ms=1, max_queue_rows=64)
    result = await batcher.submit(row(1.0), 1, None)
    np.testing.assert_array_equal(result["y"], expected(row(1.0)))
    assert model.batches == [1]
    await batcher.close()


async def test_only_requests_of_the_same_row_shape_are_joined(harness: Harness) -> None:
    held = await harness.hold()
    requests = [row(1.0, width=3), row(2.0, width=2), row(3.0, width=3)]
    tasks = await harness.queue(*requests)
    harness.release()
    results = await asyncio.gather(held, *tasks)
    assert harness.model.batches == [1, 2, 1]
    for feeds, result in zip(requests, results[1:], strict=True):
        np.testing.assert_array_equal(result["y"], expected(feeds))


async def test_a_model_without_a_dynamic_batch_axis_runs_each_request_alone(
    make_harness: MakeHarness,
) -> None:
    fixed = Signature(
        inputs=[TensorSpec(name="x", dtype="FP32", shape=[1, 2])],
        outputs=[TensorSpec(name="y", dtype="FP32", shape=[1, 2])],
    )
    harness = make_harness(GatedModel(fixed))
    held = await harness.hold()
    tasks = await harness.queue(row(1.0), row(2.0))
    harness.release()
    await asyncio.gather(held, *tasks)
    assert harness.model.batches == [1, 1, 1]


async def test_outputs_that_are_not_per_row_make_the_batch_run_each_request_alone(
    make_harness: MakeHarness,
) -> None:
    class Summing(GatedModel):
        def run(self, feeds: Feeds) -> Feeds:
            out = super().run(feeds)
            return out | {"total": np.array([feeds["x"].sum()])}

    harness = make_harness(Summing())
    held = await harness.hold()
    tasks = await harness.queue(row(1.0), row(2.0))
    harness.release()
    results = await asyncio.gather(held, *tasks)
    assert [float(result["total"][0]) for result in results] == [0.0, 2.0, 4.0]
    assert harness.model.batches == [1, 2, 1, 1]


async def test_close_runs_what_is_queued_then_refuses_new_requests(harness: Harness) -> None:
    held = await harness.hold()
    tasks = await harness.queue(row(1.0), row(2.0))
    closing = asyncio.ensure_future(harness.batcher.close())
    await until(lambda: harness.batcher.closing)
    with pytest.raises(Unavailable, match="being unloaded"):
        await harness.batcher.submit(row(3.0), 1, None)
    harness.release()
    await closing
    assert len(await asyncio.gather(held, *tasks)) == 3


async def test_a_shared_executor_outlives_the_batcher() -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        batcher = Batcher(
            GatedModel(),
            max_batch_size=8,
            max_queue_delay_ms=0,
            max_queue_rows=8,
            runners=2,
            executor=executor,
        )
        await batcher.submit(row(1.0), 1, None)
        await batcher.close()
        assert executor.submit(lambda: 42).result(timeout=30) == 42


async def test_a_stopped_shared_executor_answers_unavailable() -> None:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    executor.shutdown()
    batcher = Batcher(
        GatedModel(), max_batch_size=8, max_queue_delay_ms=0, max_queue_rows=8, executor=executor
    )
    with pytest.raises(Unavailable, match="fake:1's runners stopped"):
        await batcher.submit(row(1.0), 1, None)
    await batcher.close()


def _signals(model: str) -> dict[str, float]:
    """This model's scaling signals as ``/metrics`` shows them (name -> value)."""
    from prometheus_client.parser import text_string_to_metric_families

    from app.kernel import telemetry

    found = {}
    for family in text_string_to_metric_families(telemetry.metrics_text().decode()):
        for sample in family.samples:
            if sample.labels.get("model") == model and "le" not in sample.labels:
                found[sample.name] = sample.value
    return found


async def test_queued_rows_requests_in_flight_and_rows_per_run_reach_metrics(
    make_harness: MakeHarness,
) -> None:
    model = GatedModel()
    model.name = "signals"
    harness = make_harness(model)
    held = await harness.hold()
    tasks = await harness.queue(row(1.0, rows=3), row(2.0, rows=2))
    waiting = _signals("signals")
    harness.release()
    await asyncio.gather(held, *tasks)
    done = _signals("signals")

    assert waiting["quarry_inference_queue_rows"] == 5
    assert waiting["quarry_inference_requests_in_flight"] == 3
    assert done["quarry_inference_queue_rows"] == 0
    assert done["quarry_inference_requests_in_flight"] == 0
    assert done["quarry_inference_batch_size_count"] == 2  # the held row, then both queued
    assert done["quarry_inference_batch_size_sum"] == 6
