"""The wire codec of contract calls: msgpack encoders and decoders built once per method.

Also :func:`loopback`, a transport that runs every call in-process but through a full msgpack
round trip (request, answer, streamed items and errors), proving a contract survives the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from app.kernel.protocols import ContractMethod, describe
from contracts.common import InvalidInput, QuarryError, error_class

__all__ = ["ErrorBody", "MethodCodec", "decode_error", "encode_error", "loopback", "method_codecs"]

_ENCODER = msgspec.msgpack.Encoder()


class ErrorBody(msgspec.Struct, kw_only=True):
    """``{"error": message, "code": code, "details": {...}}``."""

    error: str
    code: str
    details: dict[str, Any] = {}


_ERROR_DECODER = msgspec.msgpack.Decoder(ErrorBody)


class MethodCodec:
    """Encode and decode one method's requests and answers."""

    def __init__(self, method: ContractMethod) -> None:
        self.method = method
        self._request = msgspec.msgpack.Decoder(method.request) if method.request else None
        self._answer = msgspec.msgpack.Decoder(method.answer)

    @staticmethod
    def encode(value: Any) -> bytes:
        """Encode a request, an answer or a streamed item."""
        return _ENCODER.encode(value)

    def decode_request(self, data: bytes | memoryview) -> Any:
        """Decode a request; malformed bodies raise :class:`InvalidInput` naming the problem."""
        if self._request is None:
            return None
        try:
            return self._request.decode(data)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid {self.method.name} request: {exc}") from None
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"malformed {self.method.name} request body: {exc}") from None

    def decode_answer(self, data: bytes | memoryview) -> Any:
        """Decode an answer or a streamed item."""
        return self._answer.decode(data)


def method_codecs(protocol: type) -> dict[str, MethodCodec]:
    """One codec per method of ``protocol``."""
    return {m.name: MethodCodec(m) for m in describe(protocol)}


def encode_error(error: QuarryError) -> bytes:
    """The wire form of a contract error."""
    return _ENCODER.encode(error.to_dict())


def decode_error(data: bytes | memoryview) -> QuarryError:
    """Re-create the error class a remote raised from its wire form."""
    body = _ERROR_DECODER.decode(data)
    return error_class(body.code)(body.error, details=body.details)


def loopback(protocol: type, implementation: Any) -> Any:
    """``implementation`` behind a msgpack round trip of everything that crosses the contract."""
    proxy = type(f"Loopback{protocol.__name__}", (), {})()
    for name, codec in method_codecs(protocol).items():
        target = getattr(implementation, name)
        wrap = _loop_stream if codec.method.info.streaming else _loop_call
        setattr(proxy, name, wrap(codec, target))
    return proxy


def _through_wire(codec: MethodCodec, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(codec.decode_request(codec.encode(a)) for a in args)


def _loop_call(codec: MethodCodec, target: Callable[..., Any]) -> Callable[..., Any]:
    async def call(*args: Any) -> Any:
        try:
            answer = await target(*_through_wire(codec, args))
        except QuarryError as exc:
            raise decode_error(encode_error(exc)) from None
        return codec.decode_answer(codec.encode(answer))

    return call


def _loop_stream(codec: MethodCodec, target: Callable[..., Any]) -> Callable[..., Any]:
    async def stream(*args: Any) -> AsyncIterator[Any]:
        try:
            async for item in target(*_through_wire(codec, args)):
                yield codec.decode_answer(codec.encode(item))
        except QuarryError as exc:
            raise decode_error(encode_error(exc)) from None

    return stream
