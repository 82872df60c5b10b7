"""A circuit breaker per remote module: closed, open, half-open (one probe), closed again."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import Literal

from opentelemetry.metrics import CallbackOptions, Observation

from app.kernel import telemetry
from contracts.common import Unavailable

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]
_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}
_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
_gauge_registered = False


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_s`` lets one probe through.

    A successful probe closes it; a failed one opens it again for another ``reset_s``.
    """

    def __init__(
        self,
        module: str,
        *,
        threshold: int = 5,
        reset_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.module = module
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        _register(self)

    @property
    def state(self) -> BreakerState:
        """The state as callers would meet it now."""
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.reset_s:
            return "half_open"
        return "open"

    def before_call(self) -> None:
        """Refuse the call with :class:`Unavailable` while open (or while a probe is out)."""
        if self._opened_at is None:
            return
        waited = self._clock() - self._opened_at
        if waited >= self.reset_s and not self._probing:
            self._probing = True  # this call is the probe
            return
        retry_after = max(self.reset_s - waited, 0.1)
        raise Unavailable(
            f"module {self.module} is unavailable: circuit breaker open after repeated failures",
            retry_after=retry_after,
            details={"module": self.module, "breaker": self.state},
        )

    def record_success(self) -> None:
        """The remote answered: close."""
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """The remote could not be reached or answered garbage."""
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
            self._probing = False


def _register(breaker: CircuitBreaker) -> None:
    global _gauge_registered  # noqa: PLW0603 - one observable gauge per process
    _breakers.add(breaker)
    if not _gauge_registered:
        telemetry.meter("quarry.rpc").create_observable_gauge(
            "quarry.rpc.breaker.state",
            callbacks=[_observe],
            description="Circuit breaker per remote module: 0 closed, 1 half-open, 2 open.",
        )
        _gauge_registered = True


def _observe(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(_STATE_VALUE[b.state], {"module": b.module}) for b in list(_breakers)]
