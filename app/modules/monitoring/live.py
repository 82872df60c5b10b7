"""Live per-version figures for ``/metrics``, over the last five minutes of records.

Records received by this process are kept in a bounded window per model version; at scrape time
a collector registered once with ``prometheus_client`` turns every live source into gauges:
``quarry_monitoring_requests_per_second``, ``quarry_monitoring_error_rate``,
``quarry_monitoring_latency_p99_seconds`` and ``quarry_monitoring_slo_compliance`` (labels
``model`` and ``version``; ``version="all"`` covers every version of the model).
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from contracts.inference import PredictionRecord

__all__ = ["WINDOW_S", "LiveFigures"]

WINDOW_S = 300.0
PER_VERSION = 50_000
"""Records kept per model version (the oldest go first)."""


class LiveFigures:
    """The recent records of each model version this process received."""

    def __init__(self, *, slo_s: float) -> None:
        self.slo_s = slo_s
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], deque[tuple[float, float, bool]]] = {}

    def add(self, records: Sequence[PredictionRecord]) -> None:
        """Take a batch of records."""
        with self._lock:
            for r in records:
                key = (r.model, "" if r.version is None else str(r.version))
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = deque(maxlen=PER_VERSION)
                series.append((r.at.timestamp(), r.latency_s, r.status == "ok"))

    def figures(self) -> dict[tuple[str, str], dict[str, float]]:
        """Per ``(model, version)`` and ``(model, "all")``: qps, error rate, p99 latency and SLO
        compliance (errors before a version was resolved have version ``""``)."""
        cutoff = time.time() - WINDOW_S
        grouped: dict[tuple[str, str], list[tuple[float, float, bool]]] = {}
        with self._lock:
            for key, series in list(self._series.items()):
                while series and series[0][0] < cutoff:
                    series.popleft()
                if not series:
                    del self._series[key]
                    continue
                grouped[key] = list(series)
                grouped.setdefault((key[0], "all"), []).extend(series)
        return {key: self._figures(series) for key, series in grouped.items()}

    def _figures(self, series: list[tuple[float, float, bool]]) -> dict[str, float]:
        latencies = np.fromiter((s[1] for s in series), dtype=np.float64)
        ok = sum(1 for s in series if s[2])
        return {
            "qps": len(series) / WINDOW_S,
            "error_rate": 1 - ok / len(series),
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
