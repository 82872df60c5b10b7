"""``Idempotency-Key`` on POST: a retried request gets the first answer instead of running twice.

The first request with a given (principal, key, method, path) runs normally; its answer is
remembered for ``ttl_s`` when it is a 2xx or a 4xx (5xx, 408, 425 and 429 are not kept, so a retry
can succeed). A repeat with the same request (query string and body, compared by sha256) gets the
stored answer with ``Idempotent-Replayed: true``; a different request under the same key is a 409;
a repeat that arrives while the first is still running waits for it, up to ``max_wait_s`` (then a
409 saying it is in progress, with ``Retry-After``) or its own deadline (then a 504): a first
request whose client stalled mid-upload must not hang every retry with it. The key is also put
into the call context (``CallContext.idempotency_key``) so that services can deduplicate durably;
this in-memory store only covers retries within one process.

The request body is hashed as it streams to the app, not buffered: uploads of any size can carry a
key. Before a storable answer starts, whatever body the app did not read is read and hashed (up to
``max_drain_bytes``; beyond that the answer is simply not kept). A repeat's body is hashed and
discarded, never held in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from app.kernel import context
from app.kernel.auth import Principal
from app.kernel.http.context import send_error
from contracts.common import Conflict, DeadlineExceeded, InvalidInput

__all__ = ["IdempotencyMiddleware", "IdempotencyStore", "StoredResponse"]

MAX_KEY_LENGTH = 255
_UNKEPT_CLIENT_ERRORS = frozenset({408, 425, 429})
_REPLAYED = (b"idempotent-replayed", b"true")

StoreKey = tuple[str, str, str, str]
"""(principal key id, Idempotency-Key, method, path)."""


class StoredResponse(msgspec.Struct, frozen=True):
    """An answer kept for replay."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @property
    def size(self) -> int:
        """Bytes it holds, for the store's memory bound."""
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers)


class _Entry:
    """One key's state: running (``done`` not set) or finished with ``response``."""

    __slots__ = ("done", "expires_at", "fingerprint", "response")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.fingerprint: bytes | None = None
        self.response: StoredResponse | None = None
        self.expires_at = math.inf


class IdempotencyStore:
    """Bounded in-memory answers: at most ``max_entries`` keys and ``max_bytes`` of stored answers,
    each for ``ttl_s``; the oldest go first. All methods are synchronous (asyncio-safe)."""

    def __init__(
        self,
        *,
        ttl_s: float = 24 * 3600.0,
        max_entries: int = 10_000,
        max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[StoreKey, _Entry] = OrderedDict()
        self._bytes = 0

    def lookup(self, key: StoreKey) -> _Entry | None:
        """The running or unexpired finished entry for ``key``."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= self._clock():
            self._drop(key)
            return None
        return entry

    def begin(self, key: StoreKey) -> _Entry:
        """Record that the first request for ``key`` is running."""
        entry = _Entry()
        self._drop(key)
        self._entries[key] = entry
        self._prune()
        return entry

    def finish(
        self,
        key: StoreKey,
        entry: _Entry,
        fingerprint: bytes | None,
        response: StoredResponse | None,
    ) -> None:
        """Keep ``response`` (when given) and wake every request waiting for ``entry``."""
        try:
            current = self._entries.get(key)
            if response is None or fingerprint is None or response.size > self.max_bytes:
                if current is entry:
                    self._drop(key)
            elif current is None or current is entry:
                entry.fingerprint, entry.response = fingerprint, response
                entry.expires_at = self._clock() + self.ttl_s
                self._entries[key] = entry
                self._entries.move_to_end(key)
                self._bytes += response.size
                self._prune()
        finally:
            entry.done.set()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: StoreKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.response is not None:
            self._bytes -= entry.response.size

    def _prune(self) -> None:
        now = self._clock()
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            full = len(self._entries) > self.max_entries or self._bytes > self.max_bytes
            if not full and oldest.expires_at > now:
                return
            self._drop(key)


class IdempotencyMiddleware(ASGIMiddleware):
    """Replays answers to repeated requests carrying the same ``Idempotency-Key``.

    List it after :class:`~app.kernel.http.auth.AuthMiddleware`: keys are per principal.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(
        self,
        store: IdempotencyStore | None = None,
        *,
        methods: Iterable[str] = ("POST",),
        max_drain_bytes: int = 1 << 20,
        max_wait_s: float = 30.0,
    ) -> None:
        self.store = store if store is not None else IdempotencyStore()
        self.methods = frozenset(m.upper() for m in methods)
        self.max_drain_bytes = max_drain_bytes
        self.max_wait_s = max_wait_s

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Run, wait for, or replay the request, depending on what its key has seen."""
        method = str(scope.get("method") or "")
        key = _header(scope, b"idempotency-key") if method in self.methods else None
        if key is None:
            await next_app(scope, receive, send)
            return
        if not key or len(key) > MAX_KEY_LENGTH:
            await send_error(
                send,
                InvalidInput(
                    f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters",
                    details={"header": "Idempotency-Key", "length": len(key)},
                ),
            )
            return
        store_key: StoreKey = (_caller(scope), key, method, scope["path"])
        give_up_at = time.monotonic() + self.max_wait_s
        with context.use(msgspec.structs.replace(context.current(), idempotency_key=key)):
            while (entry := self.store.lookup(store_key)) is not None:
                if entry.done.is_set():
                    await _replay(entry, key, scope, receive, send)
                    return
                if not await _wait_for(entry, give_up_at):
                    await _still_running(key, give_up_at, send)
                    return
            entry = self.store.begin(store_key)
            recording = _Recording(
                scope, receive, send, self.max_drain_bytes, max_keep_bytes=self.store.max_bytes
            )
            try:
                await next_app(scope, recording.receive, recording.send)
            finally:
                self.store.finish(store_key, entry, recording.fingerprint(), recording.response())


async def _wait_for(entry: _Entry, give_up_at: float) -> bool:
    """Wait until ``entry`` is done, the call's deadline or ``give_up_at``; whether it is done."""
    deadline = context.current().deadline
    until = give_up_at if deadline is None else min(deadline, give_up_at)
    try:
        await asyncio.wait_for(entry.done.wait(), max(0.0, until - time.monotonic()))
    except TimeoutError:
        return False
    return True


async def _still_running(key: str, give_up_at: float, send: Send) -> None:
    deadline = context.current().deadline
    if deadline is not None and deadline < give_up_at:
        error = DeadlineExceeded(
            "the deadline passed while the first request with this Idempotency-Key was running",
            details={"idempotency_key": key},
        )
        await send_error(send, error)
        return
    await send_error(
        send,
        Conflict(
            "a request with this Idempotency-Key is still in progress; retry later",
            details={"idempotency_key": key},
        ),
        {"Retry-After": "1"},
    )


async def _replay(entry: _Entry, key: str, scope: Scope, receive: Receive, send: Send) -> None:
    hasher = _Hasher(scope)
    while not hasher.complete:
        if not hasher.observe(await receive()):
            return  # the client went away
    if entry.response is None or hasher.digest() != entry.fingerprint:
        await send_error(
            send,
            Conflict(
                "Idempotency-Key reused with a different request",
                details={"idempotency_key": key},
            ),
        )
        return
    stored = entry.response
    await send(
        {
            "type": "http.response.start",
            "status": stored.status,
            "headers": [*stored.headers, _REPLAYED],
        }
    )
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


class _Hasher:
    """sha256 over the query string and the request body, fed ASGI messages as they pass.

    Multipart bodies are hashed without their boundary marker: a client retrying an upload picks
    a fresh boundary, and that alone must not make the retry a different request.
    """

    def __init__(self, scope: Scope) -> None:
        self._sha = hashlib.sha256(scope.get("query_string", b""))
        self._sha.update(b"\0")
        self._marker = _multipart_marker(scope)
        self._carry = b""
        self.complete = False
        self.size = 0

    def observe(self, message: ReceiveMessage) -> bool:
        """Feed one received message; ``False`` when it says the client disconnected."""
        if message["type"] == "http.request":
            if not self.complete:
                body = message.get("body", b"")
                self.size += len(body)
                self.complete = not message.get("more_body", False)
                self._update(body)
            return True
        return message["type"] != "http.disconnect"

    def _update(self, body: bytes) -> None:
        if not self._marker:
            self._sha.update(body)
            return
        clean = (self._carry + body).replace(self._marker, b"")
        keep = len(self._marker) - 1  # a marker may straddle two chunks
        if self.complete or len(clean) <= keep:
            self._carry = b"" if self.complete else clean
            if self.complete:
                self._sha.update(clean)
            return
        self._sha.update(clean[: len(clean) - keep])
        self._carry = clean[len(clean) - keep :]

    def digest(self) -> bytes:
        return self._sha.digest()


def _multipart_marker(scope: Scope) -> bytes:
    for key, value in scope.get("headers", ()):
        if key == b"content-type" and value.lower().startswith(b"multipart/"):
            for part in value.split(b";"):
                name, _, boundary = part.strip().partition(b"=")
                if name.lower() == b"boundary" and boundary:
                    return b"--" + boundary.strip(b'"')
    return b""


class _Recording:
    """Wraps a first request's ``receive``/``send``: hashes the body and records the answer."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        max_drain_bytes: int,
        *,
        max_keep_bytes: int,
    ) -> None:
        self._receive = receive
        self._send = send
        self._hasher = _Hasher(scope)
        self._connected = True
        self._max_drain = max_drain_bytes
        self._status = 0
        self._headers: tuple[tuple[bytes, bytes], ...] = ()
        self._chunks: list[bytes] = []
        self._kept_bytes = 0
        self._max_keep = max_keep_bytes
        self._keep = True
        self._finished = False

    async def receive(self) -> ReceiveMessage:
        message = await self._receive()
        self._connected = self._hasher.observe(message) and self._connected
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._headers = tuple((bytes(k), bytes(v)) for k, v in message.get("headers", ()))
            self._keep = _keepable(self._status)
            if self._keep and not self._hasher.complete:
                await self._drain()
        elif message["type"] == "http.response.body":
            if self._keep:
                self._chunks.append(bytes(message.get("body", b"")))
                self._kept_bytes += len(self._chunks[-1])
                if self._kept_bytes > self._max_keep:  # too big to keep: stop copying it
                    self._keep, self._chunks = False, []
            self._finished = not message.get("more_body", False)
        else:
            self._keep = False  # file sends and other extensions are not replayable
        await self._send(message)

    async def _drain(self) -> None:
        """Read (and hash) the body the app left unread, so the request can be compared later."""
        start = self._hasher.size
        while self._connected and not self._hasher.complete:
            if self._hasher.size - start > self._max_drain:
                self._keep = False
                return
            self._connected = self._hasher.observe(await self._receive())

    def fingerprint(self) -> bytes | None:
        """The request's hash, when the whole body was seen."""
        if self._connected and self._hasher.complete:
            return self._hasher.digest()
        return None

    def response(self) -> StoredResponse | None:
        """The complete answer, when it is one to keep."""
        if not (self._keep and self._finished):
            return None
        return StoredResponse(self._status, self._headers, b"".join(self._chunks))


def _keepable(status: int) -> bool:
    return 200 <= status < 300 or (400 <= status < 500 and status not in _UNKEPT_CLIENT_ERRORS)


def _caller(scope: Scope) -> str:
    """The principal's key id; the client address if no auth middleware ran before this one."""
    user = scope.get("user")
    if isinstance(user, Principal):
        return user.key_id
    client = scope.get("client")
    return f"client:{client[0] if client else 'unknown'}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1").strip())
    return None
