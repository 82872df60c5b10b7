"""An httpx transport behind the interface of :class:`~app.kernel.rpc.connections.ConnectionPool`.

:class:`~app.kernel.rpc.RemoteModule` uses it when it is handed an httpx transport: tests reach an
ASGI app in-process (``httpx.ASGITransport``) or a scripted remote (``httpx.MockTransport``) this
way. Real remotes go through the pooled connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import httpx

from app.kernel.rpc.connections import TransportError, header_line

__all__ = ["HttpxAnswer", "HttpxPool"]


class HttpxAnswer:
    """An httpx streamed response as an :class:`~app.kernel.rpc.connections.Answer`."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self._response.aread()
        except httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body in pieces."""
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        """Release the response."""
        await self._response.aclose()


class HttpxPool:
    """``POST`` requests under ``url`` through ``transport``, with ``headers`` on each."""

    def __init__(
        self,
        url: str,
        transport: httpx.AsyncBaseTransport,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._headers = dict(headers)
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/") + "/",
            timeout=None,  # noqa: S113 - every call is bounded by its own deadline instead
            transport=transport,
        )

    async def post(self, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> HttpxAnswer:
        """``POST`` ``body`` to ``path``; the answer once its headers arrived."""
        extra = dict(headers)
        for name, value in extra.items():
            header_line(name, value)  # the same refusals as the pooled connections
        request = self._http.build_request(
            "POST", path.lstrip("/"), content=body, headers={**self._headers, **extra}
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        return HttpxAnswer(response)

    async def aclose(self) -> None:
        """Close the client."""
        await self._http.aclose()
