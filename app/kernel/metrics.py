"""Metrics on the request path: counted in-process, exposed on ``/metrics``.

An OpenTelemetry SDK instrument costs ~13 µs per measurement on a 2-core VM (attributes hashed,
views matched, a ``Measurement`` built and a lock taken on every call), and a prediction over HTTP
records six of them. These instruments cost ~1 µs: a series is found by its attribute values and
counted in place, and bucket bounds are :data:`~app.kernel.telemetry.DURATION_BUCKETS`
unless given. They are exposed in the Prometheus text format exactly as
:class:`~opentelemetry.exporter.prometheus.PrometheusMetricReader` exposes an SDK instrument with
the same name, unit and description: the family name, the sorted label names (a label a series
lacks reads ``""``), the label values and the buckets are the same.

Instruments are created on first use by the code that records them (not at import time) and
registered once with the ``prometheus_client`` registry that ``/metrics`` reads.

**Bounded series.** Each instrument keeps at most :func:`series_limit` label sets (default
:data:`DEFAULT_MAX_SERIES`, ``QUARRY_METRICS_MAX_SERIES``; an instrument may set its own). As
OpenTelemetry's SDK does at its cardinality limit, an observation with a new label set beyond the
cap is not dropped but folded into one overflow series labelled ``otel_metric_overflow="true"``
(so totals stay right), and counted in ``quarry_metric_series_overflow_total{instrument=...}``,
``instrument`` being the family name on ``/metrics``. Memory and ``/metrics`` stay bounded
whatever label values callers make up.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from json import dumps
from typing import Any, TypeVar

from opentelemetry.exporter.prometheus._mapping import (
    map_unit,
    sanitize_attribute,
    sanitize_full_name,
)
from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from app.kernel.telemetry import DURATION_BUCKETS

__all__ = [
    "DEFAULT_MAX_SERIES",
    "OVERFLOW_ATTRIBUTE",
    "Counter",
    "Histogram",
    "Series",
    "Total",
    "UpDownCounter",
    "limit_series",
    "series_limit",
    "shared",
]


Key = tuple[tuple[str, Any], ...]
S = TypeVar("S")

DEFAULT_MAX_SERIES = 1000
"""Label sets an instrument keeps unless told otherwise (:func:`limit_series`)."""
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"
"""The attribute (``true``) of the one series that takes observations beyond the cap."""
_OVERFLOW: Key = ((OVERFLOW_ATTRIBUTE, True),)
_limit = DEFAULT_MAX_SERIES


def limit_series(max_series: int) -> None:
    """Cap every instrument of this process, present and future, at ``max_series`` label sets.

    Series recorded before stay; only new label sets beyond the cap go to the overflow series.
    Instruments created with their own ``max_series`` keep it.
    """
    global _limit  # noqa: PLW0603 - one cap per process, set from the settings at start-up
    if max_series < 1:
        raise ValueError(f"max_series must be at least 1, not {max_series}")
    _limit = max_series


def series_limit() -> int:
    """The cap on label sets per instrument in effect for instruments without their own."""
    return _limit


class _Instrument:
    kind: type[Metric]

    def __init__(
        self,
        name: str,
        *,
        unit: str = "",
        description: str = "",
        max_series: int | None = None,
    ) -> None:
        self.name = sanitize_full_name(name)
        self.unit = map_unit(unit)
        self.description = description
        self.max_series = max_series
        """This instrument's own cap on label sets (``None``: :func:`series_limit`)."""
        self._lock = threading.Lock()
        _collector().add(self)

    @property
    def exposed_name(self) -> str:
        """The family name on ``/metrics`` (the name and its unit, before any ``_total``)."""
        suffix = f"_{self.unit}" if self.unit else ""
        return self.name if self.name.endswith(suffix) else self.name + suffix

    def overflowed(self) -> int:
        """Observations recorded into the overflow series so far."""
        raise NotImplementedError

    def _find(
        self, table: dict[Key, S], attributes: Mapping[str, Any] | None, make: Callable[[], S]
    ) -> S:
        """The series of ``attributes`` in ``table``, made by ``make`` the first time; beyond
        the cap, a new label set gets the overflow series."""
        key = _key(attributes) if attributes else ()
        found = table.get(key)
        if found is None:
            with self._lock:
                found = table.get(key)
                if found is None:
                    if self._full(len(table)):
                        key = _OVERFLOW
                    found = table.setdefault(key, make())
        return found

    def _full(self, size: int) -> bool:
        return size >= (self.max_series if self.max_series is not None else _limit)

    def family(self) -> Metric | None:
        """The Prometheus family of everything recorded so far (``None`` before the first)."""
        with self._lock:
            points = self._points()
        if not points:
            return None
        keys = sorted({sanitize_attribute(k) for key, _ in points for k, _v in key})
        family = self.kind(self.name, self.description, labels=keys, unit=self.unit)  # type: ignore[call-arg]
        for key, value in points:
            labels = {sanitize_attribute(k): _label(v) for k, v in key}
            self._add(family, [labels.get(k, "") for k in keys], value)
        return family

    def _points(self) -> list[tuple[Key, Any]]:
        raise NotImplementedError

    def _add(self, family: Any, labels: list[str], value: Any) -> None:
        family.add_metric(labels, value)


class Total:
    """One sum series: a set of attribute values, added to without looking them up."""

    __slots__ = ("_lock", "observations", "value")

    def __init__(self, lock: threading.Lock) -> None:
        self.value = 0.0
        self.observations = 0
        self._lock = lock

    def add(self, amount: float) -> None:
        """Add ``amount`` (negative for a gauge going down)."""
        with self._lock:
            self.value += amount
            self.observations += 1


class _Sum(_Instrument):
    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._series: dict[Key, Total] = {}

    def series(self, attributes: Mapping[str, Any] | None = None) -> Total:
        """The series of ``attributes``, for a caller that adds to it many times.

        Beyond the cap, a new label set gets the overflow series.
        """
        return self._find(self._series, attributes, lambda: Total(self._lock))

    def add(self, amount: float, attributes: Mapping[str, Any] | None = None) -> None:
        """Add ``amount`` to the series of ``attributes`` (or to the overflow series)."""
        self.series(attributes).add(amount)

    def overflowed(self) -> int:
        overflow = self._series.get(_OVERFLOW)
        return 0 if overflow is None else overflow.observations

    def _points(self) -> list[tuple[Key, Any]]:
        return [(key, float(total.value)) for key, total in self._series.items()]


class Counter(_Sum):
    """A monotonic count, exposed as a Prometheus counter (``<name>_total``)."""

    kind = CounterMetricFamily


class UpDownCounter(_Sum):
    """A count that goes up and down (requests in flight), exposed as a Prometheus gauge."""

    kind = GaugeMetricFamily


class Series:
    """One histogram series: a set of attribute values, counted without looking them up."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: Sequence[float], lock: threading.Lock) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = lock

    def record(self, value: float) -> None:
        """Count ``value`` in its bucket (bounds are inclusive upper bounds)."""
        with self._lock:
            self._counts[bisect_left(self._bounds, value)] += 1
            self._sum += value


class Histogram(_Instrument):
    """A histogram with explicit bucket bounds, exposed as a Prometheus histogram."""

    kind = HistogramMetricFamily

    def __init__(
        self,
        name: str,
        *,
        unit: str = "",
        description: str = "",
        buckets: Sequence[float] = DURATION_BUCKETS,
        max_series: int | None = None,
    ) -> None:
        super().__init__(name, unit=unit, description=description, max_series=max_series)
        self._bounds = tuple(buckets)
        self._series: dict[Key, Series] = {}

    def series(self, attributes: Mapping[str, Any]) -> Series:
        """The series of ``attributes``, for a caller that records into it many times.

        Beyond the cap, a new label set gets the overflow series.
        """
        return self._find(self._series, attributes, lambda: Series(self._bounds, self._lock))

    def is_overflow(self, series: Series) -> bool:
        """Whether ``series`` is the one that takes label sets beyond the cap."""
        return series is self._series.get(_OVERFLOW)

    def overflowed(self) -> int:
        overflow = self._series.get(_OVERFLOW)
        if overflow is None:
            return 0
        with self._lock:
            return sum(overflow._counts)

    def record(self, value: float, attributes: Mapping[str, Any]) -> None:
        """Count ``value`` in the series of ``attributes``."""
        self.series(attributes).record(value)

    def _points(self) -> list[tuple[Key, Any]]:
        return [
            (key, (list(s._counts), s._sum)) for key, s in self._series.items() if any(s._counts)
        ]

    def _add(self, family: Any, labels: list[str], value: Any) -> None:
        counts, total = value
        buckets, running = [], 0
        for bound, count in zip((*self._bounds, "+Inf"), counts, strict=True):
            running += count
            buckets.append((f"{bound}", running))
        family.add_metric(labels, buckets=buckets, sum_value=total)


_keys: dict[Key, Key] = {}
_MAX_KEYS = 16384


def _key(attributes: Mapping[str, Any]) -> Key:
    """The series key of ``attributes``: their items sorted by name, remembered by the items in
    the order given (callers on the request path pass the same labels in the same order)."""
    items = tuple(attributes.items())
    key = _keys.get(items)
    if key is None:
        key = tuple(sorted(items))
        if len(_keys) < _MAX_KEYS:  # beyond that, sorted every time: memory stays bounded
            _keys[items] = key
    return key


def _label(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value, default=str)


class _Collector:
    """The ``prometheus_client`` collector of every instrument of this module."""

    def __init__(self) -> None:
        self._instruments: list[_Instrument] = []

    def add(self, instrument: _Instrument) -> None:
        self._instruments.append(instrument)

    def collect(self) -> Iterator[Metric]:
        overflows = CounterMetricFamily(
            "quarry_metric_series_overflow",
            "Observations folded into an instrument's overflow series (its label sets at the cap).",
            labels=["instrument"],
        )
        for instrument in list(self._instruments):
            family = instrument.family()
            if family is not None:
                yield family
            if count := instrument.overflowed():
                overflows.add_metric([instrument.exposed_name], float(count))
        if overflows.samples:
            yield overflows

    def describe(self) -> list[Metric]:
        return []  # families appear as they are recorded: nothing to check at registration


InstrumentT = TypeVar("InstrumentT", bound=_Instrument)
_shared: dict[str, _Instrument] = {}
_sharing = threading.Lock()


def shared(kind: type[InstrumentT], name: str, **options: Any) -> InstrumentT:
    """The process's one ``kind`` instrument called ``name``, created on first use.

    For code that records from many objects (one per model, lease, limiter) into one series
    family: an instrument must be created once, since each one registers for ``/metrics``.
    """
    with _sharing:
        found = _shared.get(name)
        if found is None:
            found = _shared[name] = kind(name, **options)
    if not isinstance(found, kind):
        raise TypeError(f"metric {name!r} already exists as a {type(found).__name__}")
    return found


_registered: _Collector | None = None
_registering = threading.Lock()


def _collector() -> _Collector:
    global _registered  # noqa: PLW0603 - one collector per process, registered on first use
    with _registering:
        if _registered is None:
            _registered = _Collector()
            REGISTRY.register(_registered)
        return _registered
