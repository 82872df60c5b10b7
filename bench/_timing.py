"""Sequential latency measurement, the CPU time it costs, and the CPU pinning it runs under."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

__all__ = ["Stats", "Timer", "can_pin", "pin_to_cpu", "process_cpu_ns", "warm_up"]

Call = Callable[[Any], Awaitable[Any]]
_BLOCK_WARMUP = 10


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """Latency of ``calls`` sequential calls in microseconds, their throughput, and the CPU time
    this process spent per call (all threads), which other work on the machine sways less."""

    calls: int
    p50_us: float
    p99_us: float
    mean_us: float
    calls_per_s: float
    cpu_us: float


def can_pin(cpu: int | None) -> bool:
    """Whether this process may be pinned to ``cpu`` (not on a one-core machine, say)."""
    return cpu is not None and hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0)


def pin_to_cpu(cpu: int | None) -> int | None:
    """Pin this process to ``cpu``; answer the CPU it now runs on, or ``None`` if left unpinned.

    Child processes inherit the pinning: start them first.
    """
    if cpu is None or not can_pin(cpu):
        return None
    os.sched_setaffinity(0, {cpu})
    return cpu


def process_cpu_ns(pid: int) -> int | None:
    """CPU time process ``pid`` has used so far, all threads, in ns (``None`` without ``/proc``)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks)
    except (OSError, ValueError, IndexError):
        return None


async def warm_up(call: Call, request: Any, calls: int) -> None:
    """``calls`` untimed calls: connections opened, caches filled, code paths specialised."""
    for _ in range(calls):
        await call(request)


class Timer:
    """Times sequential calls block by block, so that blocks of several calls can be interleaved:
    drift in what else the machine runs then touches every interleaved call alike."""

    def __init__(self) -> None:
        self._samples: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        self._elapsed_ns = 0
        self._cpu_ns = 0

    async def run(self, call: Call, request: Any, calls: int) -> None:
        """Time one block of ``calls`` sequential ``await call(request)``, after a few untimed
        ones that settle whatever the previous block left behind in caches."""
        gc.collect()
        await warm_up(call, request, _BLOCK_WARMUP)
        samples = np.empty(calls, dtype=np.int64)
        cpu_started = time.process_time_ns()
        started = time.perf_counter_ns()
        for i in range(calls):
            begin = time.perf_counter_ns()
            await call(request)
            samples[i] = time.perf_counter_ns() - begin
        self._elapsed_ns += time.perf_counter_ns() - started
        self._cpu_ns += time.process_time_ns() - cpu_started
        self._samples.append(samples)

    def stats(self) -> Stats:
        """The statistics of every call timed so far."""
        samples = np.concatenate(self._samples)
        calls = len(samples)
        p50, p99 = np.percentile(samples, [50, 99]) / 1000
        return Stats(
            calls=calls,
            p50_us=round(float(p50), 1),
            p99_us=round(float(p99), 1),
            mean_us=round(float(samples.mean()) / 1000, 1),
            calls_per_s=round(calls * 1e9 / self._elapsed_ns, 1),
            cpu_us=round(self._cpu_ns / calls / 1000, 1),
        )
