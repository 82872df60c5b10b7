"""Posting one attempt of a delivery: checked address, signed body, bounded in time and size.

The URL is checked again (:class:`~app.modules.notifications.egress.Egress`) and the request
goes to the address that check resolved, with the URL's host in ``Host`` and in TLS (SNI and
certificate checks), so a name that resolves elsewhere in between reaches nothing unchecked.
Redirects are not followed: a 3xx answer is a failed attempt. Environment proxies are ignored,
and every attempt opens its own connection.
At most ``max_response_bytes`` of an answer are read, and the whole attempt, connection to last
byte, takes at most ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from app.modules.notifications.egress import Egress, Target
from app.modules.notifications.payloads import SIGNATURE_HEADER, sign
from app.modules.notifications.store import Claimed
from contracts.common import QuarryError
from contracts.notifications import Attempt

__all__ = ["Sender"]

USER_AGENT = "Quarry-Webhooks/1"
_SNIPPET = 200


class Sender:
    """Sends attempts over one pooled HTTP client; :meth:`aclose` closes it."""

    def __init__(self, egress: Egress, *, timeout_s: float, max_response_bytes: int) -> None:
        self._egress = egress
        self._timeout_s = timeout_s
        self._max_bytes = max_response_bytes
        # No kept-alive connections: the pool is keyed by the address connected to, and a
        # connection verified for one host name must not carry another's request.
        self._http = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        await self._http.aclose()

    async def attempt(self, claimed: Claimed) -> Attempt:
        """Make attempt ``claimed.attempts + 1``; the answer says how it went (never raises)."""
        started, clock = time.time(), time.monotonic()
        status: int | None = None
        error: str | None
        try:
            async with asyncio.timeout(self._timeout_s):
                target = await self._egress.check(claimed.url)
                status, snippet = await self._post(target, claimed)
        except QuarryError as exc:  # the URL is no longer allowed
            error = exc.message
        except TimeoutError:
            error = f"no answer within {self._timeout_s:g} s"
        except Exception as exc:  # any other failure is this attempt's too, recorded as such
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            error = _judge(status, snippet)
        return Attempt(
            number=claimed.attempts + 1,
            at=started,
            duration_s=time.monotonic() - clock,
            status_code=status,
            error=error,
        )

    async def _post(self, target: Target, claimed: Claimed) -> tuple[int, bytes]:
        parts = target.url
        address = f"[{target.address}]" if ":" in target.address else target.address
        default_port = 443 if parts.scheme == "https" else 80
        netloc = address if target.port == default_port else f"{address}:{target.port}"
        url = parts._replace(netloc=netloc, fragment="").geturl()
        name = f"[{target.host}]" if ":" in target.host else target.host  # an IPv6 literal
        host = name if target.port == default_port else f"{name}:{target.port}"
        headers = {
            "host": host,
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(claimed.secret, claimed.body, int(time.time())),
            "Quarry-Event": claimed.event_type,
            "Quarry-Event-Id": claimed.event_id,
            "Quarry-Delivery": claimed.id,
        }
        request = self._http.build_request(
            "POST",
            url,
            content=claimed.body,
            headers=headers,
            extensions={"sni_hostname": target.host},
        )
        response = await self._http.send(request, stream=True)
        try:
            snippet = b""
            async for chunk in response.aiter_raw():
                snippet += chunk
                if len(snippet) >= self._max_bytes:
                    break
            return response.status_code, snippet[: self._max_bytes]
        finally:
            await response.aclose()


def _judge(status: int | None, snippet: bytes) -> str | None:
    if status is None or 200 <= status < 300:
        return None
    text = snippet[:_SNIPPET].decode("utf-8", "replace").strip()
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    return f"HTTP {status}" + (f": {text}" if text else "")
