"""Reading a contract Protocol: its methods, their request and answer types and their markers.

Every transport and the contract checker work from this one description, built once per Protocol.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import typing
from typing import Any

import msgspec

from contracts.common import MethodInfo, method_info

__all__ = ["ContractError", "ContractMethod", "describe"]


class ContractError(TypeError):
    """A Protocol that breaks the contract rules (raised when it is described)."""


class ContractMethod(msgspec.Struct, frozen=True, kw_only=True):
    """One method of a contract Protocol.

    ``answer`` is the answer type, or for a streaming method the type of each streamed item.
    ``request`` is ``None`` for a method that takes nothing.
    """

    name: str
    request: Any
    answer: Any
    info: MethodInfo


@functools.cache
def describe(protocol: type) -> tuple[ContractMethod, ...]:
    """The methods of ``protocol`` in order; raises :class:`ContractError` on a breach."""
    methods = []
    for name, fn in vars(protocol).items():
        if name.startswith("_") or not callable(fn):
            continue
        methods.append(_describe_method(protocol, name, fn))
    if not methods:
        raise ContractError(f"{protocol.__name__} declares no methods")
    return tuple(methods)


def _describe_method(protocol: type, name: str, fn: Any) -> ContractMethod:
    where = f"{protocol.__name__}.{name}"
    info = method_info(fn)
    if info is None:
        raise ContractError(f"{where} lacks the @method marker (scope, idempotent, streaming)")
    module = inspect.getmodule(protocol)
    hints = typing.get_type_hints(fn, globalns=vars(module) if module else None)
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    if len(params) > 1:
        raise ContractError(f"{where} must take one request Struct or nothing")
    request = hints[params[0].name] if params else None
    if request is not None and not _is_struct(request):
        raise ContractError(f"{where} takes {request!r}; requests must be msgspec Structs")
    answer = hints.get("return")
    if info.streaming:
        if inspect.iscoroutinefunction(fn) or typing.get_origin(answer) not in (
            collections.abc.AsyncIterator,
            collections.abc.AsyncIterable,
        ):
            raise ContractError(
                f"{where} is streaming: a plain def returning AsyncIterator[Struct]"
            )
        (answer,) = typing.get_args(answer)
    elif not inspect.iscoroutinefunction(fn):
        raise ContractError(f"{where} must be async")
    if not _is_struct(answer):
        raise ContractError(f"{where} answers {answer!r}; answers must be msgspec Structs")
    return ContractMethod(name=name, request=request, answer=answer, info=info)


def _is_struct(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return isinstance(origin, type) and issubclass(origin, msgspec.Struct)
