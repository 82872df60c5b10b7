"""The call context: deadline, trace context, idempotency key and caller, carried in a contextvar.

Transports read it when they send a call and restore it when they receive one, so none of it
appears as a method parameter.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token

import msgspec

from contracts.common import DeadlineExceeded

__all__ = ["DEFAULT_DEADLINE_S", "CallContext", "current", "enter", "leave", "remaining", "use"]

DEFAULT_DEADLINE_S = 10.0
"""The deadline a call gets when its caller gives none."""


class CallContext(msgspec.Struct, frozen=True, kw_only=True):
    """What travels with a call. ``deadline`` is absolute, on the ``time.monotonic`` clock."""

    deadline: float | None = None
    idempotency_key: str | None = None
    principal: str | None = None
    request_id: str | None = None

    def with_timeout(self, seconds: float) -> CallContext:
        """A copy whose deadline is the earlier of the current one and ``seconds`` from now."""
        candidate = time.monotonic() + seconds
        if self.deadline is not None and self.deadline < candidate:
            return self
        return msgspec.structs.replace(self, deadline=candidate)


_EMPTY = CallContext()
_current: ContextVar[CallContext] = ContextVar("quarry_call_context", default=_EMPTY)


def current() -> CallContext:
    """The context of the call being served (an empty one outside any call)."""
    return _current.get()


@contextlib.contextmanager
def use(ctx: CallContext) -> Iterator[CallContext]:
    """Make ``ctx`` current for the ``with`` block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def enter(ctx: CallContext) -> Token[CallContext]:
    """Make ``ctx`` current until :func:`leave` is given the answer (:func:`use` without the
    context manager, for code that runs on every request)."""
    return _current.set(ctx)


def leave(token: Token[CallContext]) -> None:
    """Restore the context that was current before :func:`enter` answered ``token``."""
    _current.reset(token)


def remaining(default: float = DEFAULT_DEADLINE_S) -> float:
    """Seconds left before the current deadline (``default`` when none is set).

    Raises :class:`DeadlineExceeded` when the deadline has already passed.
    """
    deadline = _current.get().deadline
    if deadline is None:
        return default
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the call's deadline passed before it could run")
    return left
