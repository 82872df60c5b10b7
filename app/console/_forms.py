"""What every console action shares: the scope its contract method needs, the answer it gives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

from litestar.response import Redirect

from contracts.common import InvalidInput, QuarryError, method_info

__all__ = ["attempt", "done", "gather", "scope_of", "scopes_of", "text", "whole_number"]

T = TypeVar("T")


def scope_of(method: Callable[..., Any]) -> str:
    """The API scope a contract method declares (what a console action calling it needs)."""
    info = method_info(method)
    if info is None:
        raise TypeError(f"{method.__qualname__} is not a contract method")
    return str(info.scope)


def scopes_of(protocol: type, *methods: str) -> dict[str, str]:
    """Method name -> the scope it declares, for the console actions calling those methods."""
    return {name: scope_of(getattr(protocol, name)) for name in methods}


def done(to: str, message: str) -> Redirect:
    """After an action: back to ``to`` (a console path), saying what happened."""
    return Redirect(f"{to}?done={quote(message)}", status_code=303)


async def attempt(call: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
    """``call()``'s answer, or ``None`` and the module's message when it failed (a module this
    process cannot reach included): one section of a page fails on its own, the rest shows."""
    try:
        return await call(), None
    except QuarryError as exc:
        return None, exc.message


async def gather(*calls: Callable[[], Awaitable[Any]]) -> list[tuple[Any, str | None]]:
    """:func:`attempt` for each call, concurrently."""
    return list(await asyncio.gather(*(attempt(c) for c in calls)))


def text(form: dict[str, str], field: str, *, required: bool = True) -> str:
    """A form field, stripped; an empty required one is an :class:`InvalidInput` naming it."""
    value = form.get(field, "").strip()
    if required and not value:
        raise InvalidInput(f"the form needs a value for {field!r}", details={"field": field})
    return value


def whole_number(form: dict[str, str], field: str) -> int:
    """A positive whole number from the form (versions)."""
    value = text(form, field)
    if not value.isdigit() or int(value) < 1 or len(value) > 18:
        raise InvalidInput(f"{field!r} must be a positive whole number, not {value!r}")
    return int(value)
