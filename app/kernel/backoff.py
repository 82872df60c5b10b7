"""Backing off a background loop through a run of failures, with one log line at each end.

Background work (event relays and consumers, singleton loops, the prediction-record flusher)
keeps trying while a dependency is down. :class:`Backoff` answers how long to wait after each
failure (exponential from ``base_s``, capped at ``cap_s``, with up to 25% jitter), and logs one
line when a run of failures starts and one when it ends, never one per attempt: an outage of an
hour costs two lines. A failure that is a dependency's (a driver's connection error, see
:func:`app.kernel.errors.dependency_failure`) is logged as such, without a stack trace, and
marks that dependency down in the running monitors; anything else keeps its stack trace, once.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from app.kernel.errors import unavailable_from
from contracts.common import Unavailable

__all__ = ["Backoff"]


class Backoff:
    """How long ``what`` waits after each failure, and the lines its outages log."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        base_s: float = 0.25,
        cap_s: float = 5.0,
        module: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.what = what
        self.log = logger
        self.base_s = base_s
        self.cap_s = cap_s
        self.module = module
        """The module the work belongs to, named when a dependency is reported down."""
        self.extra = extra or {}
        self.failures = 0
        """Consecutive failures so far (0 while things work)."""
        self._since = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed."""
        return self.failures > 0

    def failed(self, exc: BaseException) -> float:
        """Count a failure; answer how many seconds to wait before the next attempt."""
        self.failures += 1
        if self.failures == 1:
            self._since = time.monotonic()
            self._log_start(exc)
        else:
            self.log.debug("%s failed again", self.what, exc_info=exc, extra=self.extra)
        return self.delay(self.failures)

    def succeeded(self) -> None:
        """Count a success: ends the run of failures (logged) if there was one."""
        if not self.failures:
            return
        self.log.info(
            "%s succeeded again after %d failed attempts in %.1f s",
            self.what,
            self.failures,
            time.monotonic() - self._since,
            extra={**self.extra, "failures": self.failures},
        )
        self.failures = 0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures."""
        nominal = min(self.base_s * 2.0 ** (failures - 1), self.cap_s)
        return nominal * (1.0 + 0.25 * random.random())

    def _log_start(self, exc: BaseException) -> None:
        outage = exc if isinstance(exc, Unavailable) else unavailable_from(exc, module=self.module)
        if outage is not None:
            self.log.warning(
                "%s failed: %s; retrying with backoff (at most %.0f s apart) until it works",
                self.what,
                outage.message,
                self.cap_s,
                extra={**self.extra, "dependency": outage.details.get("dependency")},
            )
        else:
            self.log.error(
                "%s failed; retrying with backoff until it works",
                self.what,
                exc_info=exc,
                extra=self.extra,
            )
