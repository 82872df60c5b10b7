"""What every module's routes share: bodies decoded to a Struct or a 400, path and query
parameters checked against the same contract types, JSON answers, and the scope a route needs,
read from the contract method it serves."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, TypeVar

import msgspec
from litestar import Response

from contracts.common import InvalidInput, method_info

__all__ = [
    "checked_param",
    "contract_scope",
    "decode_body",
    "from_params",
    "json_response",
    "too_deep",
]

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()


class _Decoder(Protocol[T_co]):
    def decode(self, buf: bytes, /) -> T_co: ...


def decode_body(
    decoder: _Decoder[T], raw: bytes, *, what: str, example: str, kind: str = "JSON"
) -> T:
    """``raw`` decoded by ``decoder``; ``InvalidInput`` naming ``what`` for an empty, malformed,
    mistyped or too deeply nested body (``example`` shows what is expected)."""
    if not raw:
        raise InvalidInput(f"empty body: expected {example}")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        try:
            return _with_whole_numbers(decoder, raw, exc) if kind == "JSON" else _raise(exc)
        except msgspec.ValidationError as last:
            raise InvalidInput(f"invalid {what}: {last}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed {kind} body: {exc}") from None
    except RecursionError:
        raise too_deep(kind) from None


_FLOAT_FOR_INT = re.compile(r"^Expected `int[^`]*`, got `float` - at `\$(?P<path>[^`]*)`$")
_STEP = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<index>[0-9]+)\]")


def _with_whole_numbers(decoder: _Decoder[T], raw: bytes, error: msgspec.ValidationError) -> T:
    """``raw`` decoded again with each whole number written as a float (``30.0``) where an
    integer is expected read as that integer: JSON does not tell ``30.0`` from ``30``, nor does
    JSON Schema's ``integer``. Raises the last ``ValidationError`` when something else is wrong."""
    try:  # the typed decoder stopped at the first wrong type: the rest may not even parse
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise error from None
    for _ in range(64):  # one number a round: a body would need more to be anything but odd
        found = _FLOAT_FOR_INT.match(str(error))
        if found is None or not _make_whole(value, found["path"]):
            break
        try:
            return decoder.decode(msgspec.json.encode(value))
        except msgspec.ValidationError as again:
            error = again
    raise error


def _raise(error: Exception) -> NoReturn:
    raise error


def _make_whole(value: Any, path: str) -> bool:
    """Turn the whole float at ``path`` (``.a[0].b``) within ``value`` into an int."""
    steps = list(_STEP.finditer(path))
    if "".join(step[0] for step in steps) != path or not steps:
        return False  # a path through a mapping's values: its keys are not shown
    keys: list[Any] = [s["key"] if s["key"] is not None else int(s["index"]) for s in steps]
    parent = value
    try:
        for key in keys[:-1]:
            parent = parent[key]
        number = parent[keys[-1]]
    except (KeyError, IndexError, TypeError):  # a field renamed on the wire, or a union
        return False
    if not isinstance(number, float) or not number.is_integer():
        return False
    parent[keys[-1]] = int(number)
    return True


def from_params(request_type: type[T], /, **params: Any) -> T:
    """The contract request ``request_type`` built from a route's path and query parameters.

    The fields are checked as a decoded body's would be, bounds included (``?version=`` past a
    32-bit column, ``?limit=0``): ``InvalidInput`` naming the parameter, never a 500 from deeper
    down. Parameters left ``None`` take the request's default.
    """
    fields = {name: value for name, value in params.items() if value is not None}
    try:
        return msgspec.convert(fields, request_type)
    except msgspec.ValidationError as exc:
        raise _invalid_param(str(exc)) from None


def checked_param(value: T, bounded: Any, *, name: str) -> T:
    """``value``, a path or query parameter, checked against a bounded contract type (such as
    :data:`contracts.common.Version`); ``InvalidInput`` naming ``name`` when it is outside."""
    try:
        msgspec.convert(value, bounded)
    except msgspec.ValidationError as exc:
        raise _invalid_param(f"{exc} - at `$.{name}`") from None
    return value


_WHERE = re.compile(r"^(?P<reason>.*) - at `\$\.?(?P<field>[^`]*)`$", re.DOTALL)


def _invalid_param(message: str) -> InvalidInput:
    found = _WHERE.match(message)
    reason, field = (found["reason"], found["field"]) if found else (message, "")
    return InvalidInput(
        f"invalid {field or 'parameter'}: {reason[:1].lower()}{reason[1:]}",
        details={"field": field} if field else {},
    )


def too_deep(kind: str) -> InvalidInput:
    """The error for a body nested deeper than the decoder can follow (the client's input)."""
    return InvalidInput(f"the {kind} request body is nested too deeply", details={"body": kind})


def json_response(value: Any, status_code: int = 200) -> Response[bytes]:
    """``value`` encoded by msgspec as a JSON answer."""
    return Response(_ENCODER.encode(value), media_type="application/json", status_code=status_code)


def contract_scope(method: Callable[..., Any]) -> dict[str, Any]:
    """Route ``opt`` holding the API scope the contract ``method`` is marked with."""
    info = method_info(method)
    if info is None:
        raise TypeError(f"{method!r} carries no @method marker")
    return {"scope": info.scope.value}
