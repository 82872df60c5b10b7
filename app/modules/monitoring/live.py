"""Live per-version figures for ``/metrics``, over the last five minutes of records.

Records received by this process are kept in a bounded window per model version; at scrape time
a collector registered once with ``prometheus_client`` turns every live source into gauges:
``quarry_monitoring_requests_per_second``, ``quarry_monitoring_error_rate``,
``quarry_monitoring_latency_p99_seconds`` and ``quarry_monitoring_slo_compliance`` (labels
``model`` and ``version``; ``version="all"`` covers every version of the model).

Each version's window is a ring of numpy arrays allocated whole with its first record (17 bytes
a record, 850 KB for :data:`PER_VERSION`): a server's memory does not creep for the minutes a
window of Python tuples took to fill, and a version with no record left in the window is dropped.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from contracts.inference import PredictionRecord

__all__ = ["PER_VERSION", "WINDOW_S", "LiveFigures"]

WINDOW_S = 300.0
PER_VERSION = 50_000
"""Records kept per model version (the oldest go first)."""


class _Ring:
    """The last ``capacity`` records of one version: time, latency and success, oldest
    overwritten first."""

    __slots__ = ("at", "latency", "ok", "size", "written")

    def __init__(self, capacity: int) -> None:
        self.at = np.empty(capacity, dtype=np.float64)
        self.latency = np.empty(capacity, dtype=np.float64)
        self.ok = np.empty(capacity, dtype=np.bool_)
        self.written = 0
        self.size = 0

    def extend(self, at: list[float], latency: list[float], ok: list[bool]) -> None:
        capacity = len(self.at)
        if len(at) > capacity:
            at, latency, ok = at[-capacity:], latency[-capacity:], ok[-capacity:]
        start = self.written % capacity
        first = min(len(at), capacity - start)
        for target, values in ((self.at, at), (self.latency, latency), (self.ok, ok)):
            target[start : start + first] = values[:first]
            target[: len(at) - first] = values[first:]
        self.written += len(at)
        self.size = min(capacity, self.size + len(at))

    def since(self, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """Latencies and successes of the records at or after ``cutoff``."""
        kept = self.at[: self.size] >= cutoff
        return self.latency[: self.size][kept], self.ok[: self.size][kept]


class LiveFigures:
    """The recent records of each model version this process received."""

    def __init__(self, *, slo_s: float, capacity: int = PER_VERSION) -> None:
        self.slo_s = slo_s
        self._capacity = capacity
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Ring] = {}

    def add(self, records: Sequence[PredictionRecord]) -> None:
        """Take a batch of records."""
        batches: dict[tuple[str, str], tuple[list[float], list[float], list[bool]]] = {}
        for r in records:
            key = (r.model, "" if r.version is None else str(r.version))
            batch = batches.get(key)
            if batch is None:
                batch = batches[key] = ([], [], [])
            batch[0].append(r.at.timestamp())
            batch[1].append(r.latency_s)
            batch[2].append(r.status == "ok")
        with self._lock:
            for key, (at, latency, ok) in batches.items():
                ring = self._series.get(key)
                if ring is None:
                    ring = self._series[key] = _Ring(self._capacity)
                ring.extend(at, latency, ok)

    def figures(self) -> dict[tuple[str, str], dict[str, float]]:
        """Per ``(model, version)`` and ``(model, "all")``: qps, error rate, p99 latency and SLO
        compliance (errors before a version was resolved have version ``""``)."""
        cutoff = time.time() - WINDOW_S
        grouped: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        with self._lock:
            for key, ring in list(self._series.items()):
                latency, ok = ring.since(cutoff)
                if not len(latency):
                    del self._series[key]
                    continue
                grouped[key] = [(latency, ok)]
                grouped.setdefault((key[0], "all"), []).append((latency, ok))
        return {key: self._figures(parts) for key, parts in grouped.items()}

    def _figures(self, parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        latencies = np.concatenate([p[0] for p in parts])
        ok = int(sum(np.count_nonzero(p[1]) for p in parts))
        return {
            "qps": len(latencies) / WINDOW_S,
            "error_rate": 1 - ok / len(latencies),
            "p99": float(np.quantile(latencies, 0.99)),
            "slo": float(np.mean(latencies <= self.slo_s)),
        }

    def register(self) -> None:
        """Expose this source on ``/metrics``."""
        _collector().sources.add(self)

    def unregister(self) -> None:
        """Stop exposing this source."""
        _collector().sources.discard(self)


class _Collector:
    def __init__(self) -> None:
        self.sources: weakref.WeakSet[LiveFigures] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        families = {
            "qps": GaugeMetricFamily(
                "quarry_monitoring_requests_per_second",
                "Predictions per second over the last five minutes.",
                labels=["model", "version"],
            ),
            "error_rate": GaugeMetricFamily(
                "quarry_monitoring_error_rate",
                "Share of failed predictions over the last five minutes.",
                labels=["model", "version"],
            ),
            "p99": GaugeMetricFamily(
                "quarry_monitoring_latency_p99_seconds",
                "99th percentile prediction latency over the last five minutes.",
                labels=["model", "version"],
            ),
            "slo": GaugeMetricFamily(
                "quarry_monitoring_slo_compliance",
                "Share of predictions within the latency objective over the last five minutes.",
                labels=["model", "version"],
            ),
        }
        for source in list(self.sources):
            for (model, version), values in source.figures().items():
                for name, family in families.items():
                    family.add_metric([model, version], values[name])
        yield from families.values()

    def describe(self) -> list[Metric]:
        return []


@functools.cache
def _collector() -> _Collector:
    collector = _Collector()
    REGISTRY.register(collector)
    return collector
