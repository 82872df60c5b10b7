"""The generic RPC client: one proxy per remote module, any contract Protocol.

Every call carries the trace context, the time left before its deadline, the contract version, the
idempotency key and a bearer token. Typed errors come back as the same class; anything that is not
an answer from the remote (refused connection, reset, garbage, a cut-off stream) is
:class:`Unavailable` and counts against the module's circuit breaker. Idempotent methods are retried
with exponential backoff and full jitter while the deadline allows; the deadline always wins.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from opentelemetry.propagate import inject

from app.kernel import context
from app.kernel.codec import MethodCodec, decode_error, method_codecs
from app.kernel.context import DEFAULT_DEADLINE_S
from app.kernel.errors import error_for_status
from app.kernel.rpc.breaker import CircuitBreaker
from app.kernel.rpc.connections import ConnectionPool, TransportError
from app.kernel.rpc.frames import END, ERROR, ITEM, FrameReader
from app.kernel.rpc.server import CONTRACT_HEADER, MSGPACK
from contracts.common import (
    DeadlineExceeded,
    InvalidInput,
    QuarryError,
    Unavailable,
    error_class,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["RemoteModule"]

_JSON_ERROR = msgspec.json.Decoder(dict[str, Any])
_UNSENDABLE = frozenset("\r\n\0")
Headers = dict[str, str]


class Answer(Protocol):
    """An answer whose status and headers arrived; its body is read once, then it is closed."""

    status: int
    headers: Headers

    async def read(self) -> bytes: ...

    def iter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class _Pool(Protocol):
    async def post(self, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> Answer: ...

    async def aclose(self) -> None: ...


class RemoteModule:
    """A module served by another process at ``url``; :meth:`proxy` implements its Protocol."""

    def __init__(
        self,
        name: str,
        url: str,
        protocol: type,
        version: tuple[int, int],
        *,
        token: str | None,
        caller: str = "client",
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_frame_bytes: int = 256 << 20,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.protocol = protocol
        self.breaker = breaker or CircuitBreaker(name)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._max_frame = max_frame_bytes
        headers = [
            ("content-type", MSGPACK),
            ("accept", MSGPACK),
            (CONTRACT_HEADER, f"{name}/{version[0]}.{version[1]}"),
            ("quarry-caller", caller),
        ]
        if token:
            headers.append(("authorization", f"Bearer {token}"))
        self._http: _Pool
        if transport is None:
            self._http = ConnectionPool(f"{self.url}/rpc/{name}", headers=headers)
        else:
            from app.kernel.rpc.httpx_pool import HttpxPool

            self._http = HttpxPool(f"{self.url}/rpc/{name}", transport, headers=headers)
        self._proxy = self._build_proxy()

    def proxy(self) -> Any:
        """An object with one coroutine (or async-iterator) function per contract method."""
        return self._proxy

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    # --- building ---------------------------------------------------------------------------

    def _build_proxy(self) -> Any:
        proxy = type(f"Remote{self.protocol.__name__}", (), {})()
        for name, codec in method_codecs(self.protocol).items():
            make = self._stream if codec.method.info.streaming else self._call
            setattr(proxy, name, make(name, codec))
        return proxy

    def _call(self, name: str, codec: MethodCodec) -> Callable[..., Any]:
        idempotent = codec.method.info.idempotent

        async def call(*args: Any) -> Any:
            body = codec.encode(args[0]) if args else b""
            deadline = _deadline()
            attempt = 1
            while True:
                try:
                    return self._answer(codec, await self._send(name, body, deadline))
                except Unavailable as exc:
                    if not idempotent or attempt >= self.max_attempts:
                        raise
                    await self._back_off(attempt, deadline, exc)
                    attempt += 1

        call.__name__ = name
        return call

    def _stream(self, name: str, codec: MethodCodec) -> Callable[..., AsyncIterator[Any]]:
        async def stream(*args: Any) -> AsyncIterator[Any]:
            body = codec.encode(args[0]) if args else b""
            deadline = _deadline()
            self.breaker.before_call()
            headers = self._request_headers(deadline)
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    response = await self._http.post(f"/{name}", headers, body)
                try:
                    if response.status != 200:
                        raise self._error(response.status, response.headers, await response.read())
                    self.breaker.record_success()
                    async for item in self._items(codec, response):
                        yield item
                finally:
                    await response.aclose()
            except TimeoutError:
                raise DeadlineExceeded(f"{self.name}.{name} did not finish in time") from None
            except TransportError as exc:
                self.breaker.record_failure()
                raise self._unreachable(exc) from None

        stream.__name__ = name
        return stream

    # --- one exchange -----------------------------------------------------------------------

    async def _send(self, method: str, body: bytes, deadline: float) -> tuple[int, Headers, bytes]:
        """The status, headers and body of the answer to one request."""
        self.breaker.before_call()
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"deadline passed before {self.name}.{method} was sent")
        headers = self._request_headers(deadline)
        try:
            async with asyncio.timeout(left):
                response = await self._http.post(f"/{method}", headers, body)
                try:
                    content = await response.read()
                finally:
                    await response.aclose()
        except TimeoutError:
            self.breaker.record_failure()
            raise DeadlineExceeded(
                f"{self.name}.{method} did not answer within its deadline",
                details={"module": self.name, "method": method},
            ) from None
        except TransportError as exc:
            self.breaker.record_failure()
            raise self._unreachable(exc) from None
        return response.status, response.headers, content

    def _request_headers(self, deadline: float) -> list[tuple[str, str]]:
        left_ms = max(1, int((deadline - time.monotonic()) * 1000))
        headers = [("quarry-deadline-ms", str(left_ms))]
        ctx = context.current()
        if ctx.idempotency_key:
            headers.append(("quarry-idempotency-key", ctx.idempotency_key))
        if ctx.request_id:
            headers.append(("x-request-id", ctx.request_id))
        propagated: dict[str, str] = {}
        inject(propagated)
        headers += propagated.items()
        for _, value in headers:
            if _UNSENDABLE.intersection(value):
                raise InvalidInput(
                    "the call context holds a value that cannot be sent as a header",
                    details={"value": value[:64]},
                )
        return headers

    def _answer(self, codec: MethodCodec, answer: tuple[int, Headers, bytes]) -> Any:
        status, headers, content = answer
        if status == 200:
            try:
                decoded = codec.decode_answer(content)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.breaker.record_failure()
                raise Unavailable(
                    f"module {self.name} answered something that is not a {codec.method.name}"
                    " answer",
                    details={"module": self.name},
                ) from None
            self.breaker.record_success()
            return decoded
        raise self._error(status, headers, content)

    def _error(self, status: int, headers: Headers, content: bytes) -> QuarryError:
        error = _decode_error_body(status, headers.get("content-type", ""), content)
        if error is None:
            self.breaker.record_failure()
            return Unavailable(
                f"module {self.name} answered HTTP {status} without a Quarry error",
                details={"module": self.name, "status": status},
            )
        if isinstance(error, Unavailable):
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        return error

    async def _items(self, codec: MethodCodec, response: Answer) -> AsyncIterator[Any]:
        reader = FrameReader(self._max_frame)
        async for chunk in response.iter_bytes():
            try:
                frames = list(reader.feed(chunk))
            except ValueError:
                raise self._garbled() from None
            for kind, payload in frames:
                if kind == ITEM:
                    try:
                        yield codec.decode_answer(payload)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        raise self._garbled() from None
                elif kind == ERROR:
                    raise decode_error(payload)
                elif kind == END:
                    return
        self.breaker.record_failure()
        raise Unavailable(
            f"module {self.name} closed the stream before it ended", details={"module": self.name}
        )

    def _garbled(self) -> Unavailable:
        self.breaker.record_failure()
        return Unavailable(f"module {self.name} sent a malformed stream")

    def _unreachable(self, exc: TransportError) -> Unavailable:
        return Unavailable(
            f"module {self.name} at {self.url} is unreachable: {exc}",
            retry_after=self.breaker.reset_s,
            details={"module": self.name, "url": self.url},
        )

    async def _back_off(self, attempt: int, deadline: float, error: Unavailable) -> None:
        pause = random.uniform(0, self.backoff_s * 2 ** (attempt - 1))
        if time.monotonic() + pause >= deadline:
            raise error
        await asyncio.sleep(pause)


def _deadline() -> float:
    deadline = context.current().deadline
    return deadline if deadline is not None else time.monotonic() + DEFAULT_DEADLINE_S


def _loop_time(deadline: float) -> float:
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _decode_error_body(status: int, content_type: str, content: bytes) -> QuarryError | None:
    try:
        if content_type.startswith(MSGPACK):
            return decode_error(content)
        if content_type.startswith("application/json"):
            body = _JSON_ERROR.decode(content)
            if isinstance(body.get("error"), str) and isinstance(body.get("code"), str):
                error = error_for_status(status, body["error"], body.get("details"))
                return _with_code(error, body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return None


def _with_code(fallback: QuarryError, body: dict[str, Any]) -> QuarryError:
    cls = error_class(body["code"])
    if cls is QuarryError:
        return fallback
    return cls(body["error"], details=body.get("details") or {})
