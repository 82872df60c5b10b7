"""The generic RPC endpoint: ``POST /rpc/<module>/<method>`` for any contract Protocol.

One route per module serves every method: the body is the msgpack request, the answer the msgpack
answer (or, for streaming methods, framed items). Errors answer their HTTP status with a msgpack
``{"error", "code", "details"}`` body. The auth middleware has already required the service token
or an API key for ``/rpc``; the method's scope is checked here, before the body is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from litestar import Request, Response, Router, post
from litestar.params import FromPath
from litestar.response import Stream
from litestar.types import ASGIApp
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.instrumentation.asgi import asgi_getter

from app.kernel.auth import ANONYMOUS_PRINCIPAL, Principal, check_scope
from app.kernel.codec import MethodCodec, encode_error, method_codecs
from app.kernel.errors import error_headers, status_for
from app.kernel.rpc.frames import END, ERROR, ITEM, STREAM_MEDIA_TYPE, frame
from app.kernel.settings import Settings
from contracts.common import ContractVersionMismatch, NotFound, QuarryError

__all__ = ["CONTRACT_HEADER", "MSGPACK", "rpc_router"]

MSGPACK = "application/x-msgpack"
CONTRACT_HEADER = "quarry-contract"
_CONTRACT = CONTRACT_HEADER.encode()
_MSGPACK = MSGPACK.encode()
_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})
_EMPTY = otel_context.Context()


def rpc_router(
    module: str,
    protocol: type,
    version: tuple[int, int],
    client: Any,
    settings: Settings,
) -> Router:
    """The RPC route of ``module``, calling ``client`` (a bound contract, local or remote)."""
    codecs = method_codecs(protocol)
    targets = {name: getattr(client, name) for name in codecs}

    @post(
        "/{method:str}",
        opt={"scope": None},  # checked per method below
        request_max_body_size=settings.max_rpc_body_bytes,
        include_in_schema=False,
        status_code=200,
    )
    async def call(method: FromPath[str], request: Request[Any, Any, Any]) -> ASGIApp:
        try:
            codec = codecs.get(method)
            if codec is None:
                raise NotFound(
                    f"module {module} has no method {method!r}",
                    details={"module": module, "method": method},
                )
            principal = request.scope.get("user")
            check_scope(
                principal if isinstance(principal, Principal) else ANONYMOUS_PRINCIPAL,
                codec.method.info.scope,
            )
            scope: Any = request.scope
            contract, traced = _read_headers(scope["headers"])
            _check_version(module, version, contract)
            argument = codec.decode_request(await request.body())
            target = targets[method]
            args = () if codec.method.request is None else (argument,)
            # the caller's trace continues here
            parent = propagate.extract(scope, getter=asgi_getter) if traced else _EMPTY
            if codec.method.info.streaming:
                items = _in_context(parent, target(*args))
                # litestar answers any Response it is given as one, whatever the annotation
                return cast(ASGIApp, Stream(_frames(codec, items), media_type=STREAM_MEDIA_TYPE))
            token = otel_context.attach(parent)
            try:
                answer = await target(*args)
            finally:
                otel_context.detach(token)
        except QuarryError as exc:
            return _msgpack_answer(encode_error(exc), status_for(exc), error_headers(exc))
        return _msgpack_answer(codec.encode(answer))

    return Router(path=f"/rpc/{module}", route_handlers=[call], include_in_schema=False)


def error_answer(error: QuarryError) -> Response[bytes]:
    """A contract error as an RPC answer."""
    return Response(
        encode_error(error),
        status_code=status_for(error),
        media_type=MSGPACK,
        headers=error_headers(error),
    )


async def _in_context(parent: otel_context.Context, items: Any) -> AsyncIterator[Any]:
    """Iterate ``items`` with the caller's trace context current only while each item is made."""
    iterator = items.__aiter__()
    while True:
        token = otel_context.attach(parent)
        try:
            item = await iterator.__anext__()
        except StopAsyncIteration:
            return
        finally:
            otel_context.detach(token)
        yield item


async def _frames(codec: MethodCodec, items: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    try:
        async for item in items:
            yield frame(ITEM, codec.encode(item))
    except QuarryError as exc:
        yield frame(ERROR, encode_error(exc))
        return
    yield frame(END)


def _msgpack_answer(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> ASGIApp:
    """A msgpack answer as a plain ASGI app: litestar's ``Response`` builds, checks and encodes
    its headers on every answer, a fifth of an RPC's server time in a profile."""
    raw = [(b"content-type", _MSGPACK), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    start = {"type": "http.response.start", "status": status, "headers": raw}

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": body})

    return answer


def _read_headers(headers: Any) -> tuple[str | None, bool]:
    """The ``quarry-contract`` header, and whether trace context was sent: one pass over the
    raw headers instead of litestar's decoded copy of them all."""
    contract, traced = None, False
    for key, value in headers:
        if key == _CONTRACT:
            contract = value.decode("latin-1")
        elif key in _PROPAGATED:
            traced = True
    return contract, traced


def _check_version(module: str, ours: tuple[int, int], header: str | None) -> None:
    if header is None:
        return  # callers that do not say are assumed current (curl, scripts)
    name, _, version = header.partition("/")
    major = version.split(".", 1)[0]
    # compared as text: int() would take '²' or other scripts' digits, and refuse 5000 of them
    if name != module or (major.lstrip("0") or "0") != str(ours[0]):
        raise ContractVersionMismatch(
            f"caller speaks {header!r}; this server speaks {module}/{ours[0]}.{ours[1]}",
            details={"module": module, "server": f"{ours[0]}.{ours[1]}", "caller": header},
        )
