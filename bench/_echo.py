"""A bench-only contract: ``Echo.echo`` answers what it was sent, a short string or a tensor."""

from __future__ import annotations

from typing import Protocol

import msgspec
import numpy as np

from contracts.common import Scope, Tensor, method

__all__ = [
    "CONTRACT_VERSION",
    "MODULE",
    "EchoAnswer",
    "EchoRequest",
    "EchoService",
    "LocalEcho",
    "check_echo",
    "payloads",
]

MODULE = "echo"
CONTRACT_VERSION = (1, 0)
TENSOR_SHAPE = (1000, 32)


class EchoRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Either a short ``text`` or a ``tensor``."""

    text: str | None = None
    tensor: Tensor | None = None


class EchoAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The request's ``text`` or ``tensor``, unchanged."""

    text: str | None = None
    tensor: Tensor | None = None


class EchoService(Protocol):
    """The contract whose call overhead the benchmark measures."""

    @method(scope=Scope.READ, idempotent=True)
    async def echo(self, request: EchoRequest) -> EchoAnswer:
        """Answer what was sent."""
        ...


class LocalEcho:
    """The in-process implementation: no work, so only the transport is measured."""

    async def echo(self, request: EchoRequest) -> EchoAnswer:
        return EchoAnswer(text=request.text, tensor=request.tensor)


def payloads() -> dict[str, EchoRequest]:
    """The measured requests by name: a small message and a 1000x32 float32 tensor."""
    array = np.random.default_rng(0).standard_normal(TENSOR_SHAPE, dtype=np.float32)
    return {
        "small": EchoRequest(text="hello, quarry"),
        "tensor": EchoRequest(tensor=Tensor.from_numpy(array)),
    }


def check_echo(request: EchoRequest, answer: EchoAnswer) -> None:
    """Raise ``AssertionError`` unless ``answer`` carries exactly what ``request`` did."""
    if answer.text != request.text:
        raise AssertionError(f"echo answered text {answer.text!r}, sent {request.text!r}")
    sent, got = request.tensor, answer.tensor
    if (sent is None) != (got is None):
        raise AssertionError("echo lost or invented the tensor")
    if sent is not None and got is not None:
        same = (sent.dtype, sent.shape, bytes(sent.data)) == (got.dtype, got.shape, bytes(got.data))
        if not same:
            raise AssertionError("echo answered a different tensor")
