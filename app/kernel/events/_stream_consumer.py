"""One subscribing module's consumer: its consumer group on each publisher stream, and its inbox.

A pass (1) prunes the inbox when it is time, (2) reclaims entries other consumers of the group
left pending longer than ``claim_idle_s`` (``XAUTOCLAIM``: their process died between reading
and acknowledging), (3) delivers due inbox rows (retries, resubmissions, leases that lapsed),
(4) reads new entries (``XREADGROUP ... BLOCK``; the block is the pass's sleep). After a failed
pass (Redis or the database was down) it first takes back the entries it read itself but did
not acknowledge (``XREADGROUP ... 0``), rather than leaving them to ``claim_idle_s``.

An entry read from a stream is first written to the inbox, leased to this consumer, in one
transaction; an event already there is not delivered again (deduplication by event id). Then
the handler runs, its outcome is committed to the inbox row, and only then is the entry
acknowledged (``XACK``). A failure is retried from the inbox row (the entry is acknowledged once
the row records the attempt), with exponential backoff, until ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio
from redis.exceptions import ResponseError

from app.kernel.events import _inbox
from app.kernel.events._handling import handle
from app.kernel.events._inbox import Envelope
from app.kernel.events._looping import Loop
from app.kernel.events._subscriptions import Subscriptions

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events._relay import RetryPolicy

__all__ = ["StreamConsumer"]

_READ_BATCH = 50
_CLAIM_BATCH = 20
_MAX_PRUNE_INTERVAL_S = 3600.0

Entry = tuple[bytes, Mapping[bytes, bytes] | None]
"""A stream entry as redis-py answers it: its id and fields (``None`` once trimmed away)."""


class StreamConsumer(Loop):
    """Delivers the events one subscribing module handles in this process."""

    def __init__(
        self,
        *,
        module: str,
        db: Database,
        subscriptions: Subscriptions,
        streams: Mapping[str, str],
        consumer: str,
        retry: RetryPolicy,
        poll_s: float,
        retention_s: float,
        claim_idle_s: float,
        logger: logging.Logger,
    ) -> None:
        super().__init__(
            name=f"quarry-events-consume-{module}",
            poll_s=poll_s,
            logger=logger,
            extra={"subscriber": module, "consumer": consumer},
            label=f"event consumer of {module}",
            module=module,
        )
        self.module = module
        self.db = db
        self.streams = dict(streams)
        """Each stream read, with the module publishing it."""
        self.consumer = consumer
        self._subs = subscriptions
        self._retry = retry
        self._retention_s = retention_s
        self._claim_idle_s = claim_idle_s
        # An inbox row leased by a consumer that died lapses when its stream entry can be
        # reclaimed; a consumer stops using a batch of rows after half the lease.
        self._lease_s = claim_idle_s
        self._table = _inbox.cached_table(module)
        self._types: frozenset[str] = frozenset()
        self._redis: redis.asyncio.Redis | None = None
        self._groups_ready = False
        self._next_prune = self._next_reclaim = 0.0
        self._reclaim_from: dict[str, bytes | str] = {}
        self._quiet = False
        self._own_pending = False

    # --- lifecycle --------------------------------------------------------------------------

    async def prepare(self, client: redis.asyncio.Redis) -> None:
        """Create the inbox table and the consumer groups; call before :meth:`start`."""
        self._redis = client
        self._types = frozenset(n for n, sub in self._subs.pairs() if sub == self.module)
        await self.db.write(lambda c: _inbox.ensure_table(c, self._table))
        await self._ensure_groups()

    async def leave(self) -> None:
        """Remove this consumer from its groups when it holds no entry (after the task ended)."""
        client = self._require_redis()
        for stream in self.streams:
            try:
                mine = await client.xpending_range(
                    stream, self.module, min="-", max="+", count=1, consumername=self.consumer
                )
                if not mine:
                    await client.xgroup_delconsumer(stream, self.module, self.consumer)
            except Exception:  # best effort: an idle consumer left behind costs nothing
                self.log.debug("could not leave the consumer group", exc_info=True)

    def _require_redis(self) -> redis.asyncio.Redis:
        if self._redis is None:
            raise RuntimeError(f"the stream consumer of {self.module} is not prepared")
        return self._redis

    async def _ensure_groups(self) -> None:
        client = self._require_redis()
        for stream in self.streams:
            try:
                await client.xgroup_create(stream, self.module, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    # --- a pass -----------------------------------------------------------------------------

    async def run_pass(self, generation: int) -> float:
        """One round of work; the blocking read is its sleep, so it always answers 0."""
        try:
            return await self._pass(generation)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream or group went away (a Redis restart)
                self._groups_ready = False
            raise
        except Exception:
            self._own_pending = True  # entries read in this pass may be left unacknowledged
            raise

    async def _pass(self, generation: int) -> float:
        if time.monotonic() >= self._next_prune:
            cutoff = time.time() - self._retention_s
            await self.db.write(lambda c: _inbox.prune(c, self._table, cutoff))
            self._next_prune = time.monotonic() + min(self._retention_s, _MAX_PRUNE_INTERVAL_S)
        if not self._groups_ready:
            await self._ensure_groups()
        found = 0
        if self._own_pending:
            found += await self._read_own()
        if time.monotonic() >= self._next_reclaim:
            found += await self._reclaim()
            self._next_reclaim = time.monotonic() + min(self.poll_s, self._claim_idle_s)
        work = await self._survey()  # a read: the write transaction only runs when work is due
        if work.next_due is not None and work.next_due <= time.time():
            found += await self._deliver_due()
        if found or self.stopping.is_set():
            return 0.0
        if await self._read_new(self._block_ms(work)):
            return 0.0
        # Nothing new. An entry is acknowledged only once the inbox holds it, so the group's
        # pending entries are looked at before the inbox (again, when a drain waits on it).
        self._quiet = False
        if await self._group_pending() == 0:
            if self.awaited:
                work = await self._survey()
            if work.pending == 0:
                self._quiet = True
                self.answer(generation)
        return 0.0

    async def _survey(self) -> _inbox.InboxSurvey:
        return await self.db.read(lambda c: _inbox.survey(c, self._table, self._types))

    def _block_ms(self, work: _inbox.InboxSurvey) -> int | None:
        """How long the read may block: until the next retry is due, at most ``poll_s``;
        not at all when a drain waits and the last pass found everything settled."""
        if self.awaited and self._quiet:
            return None
        wait = self.poll_s
        if work.next_due is not None:
            wait = min(wait, work.next_due - time.time())
        ms = int(wait * 1000)
        return ms if ms >= 1 else None

    async def _read_new(self, block_ms: int | None) -> int:
        client = self._require_redis()
        response: Any = await client.xreadgroup(
            self.module,
            self.consumer,
            dict.fromkeys(self.streams, ">"),
            count=_READ_BATCH,
            block=block_ms,
        )
        batches = response.items() if isinstance(response, dict) else (response or [])
        found = 0
        for stream, entries in batches:
            found += await self._process(_text(stream), entries)
        return found

    async def _read_own(self) -> int:
        """Process the entries this consumer read but did not acknowledge, a batch per stream."""
        client = self._require_redis()
        response: Any = await client.xreadgroup(
            self.module, self.consumer, dict.fromkeys(self.streams, "0"), count=_READ_BATCH
        )
        batches = response.items() if isinstance(response, dict) else (response or [])
        found, more = 0, False
        for stream, entries in batches:
            more = more or len(entries) >= _READ_BATCH
            found += await self._process(_text(stream), entries)
        self._own_pending = more
        return found

    async def _reclaim(self) -> int:
        client = self._require_redis()
        found = 0
        for stream in self.streams:
            cursor, entries, *_deleted = await client.xautoclaim(
                stream,
                self.module,
                self.consumer,
                min_idle_time=max(int(self._claim_idle_s * 1000), 1),
                start_id=self._reclaim_from.get(stream, "0-0"),
                count=_CLAIM_BATCH,
            )
            self._reclaim_from[stream] = cursor
            if entries:
                self.log.info(
                    "reclaimed stream entries left by another consumer",
                    extra={**self.extra, "stream": stream, "count": len(entries)},
                )
                found += await self._process(stream, entries)
        return found

    async def _group_pending(self) -> int:
        client = self._require_redis()
        total = 0
        for stream in self.streams:
            summary = await client.xpending(stream, self.module)
            total += int(summary["pending"])
        return total

    # --- handling entries -------------------------------------------------------------------

    async def _process(self, stream: str, entries: Sequence[Entry]) -> int:
        """Take ``entries`` into the inbox, deliver the new ones and acknowledge them all."""
        publisher = self.streams[stream]
        ack_now: list[bytes] = []
        taken: list[tuple[bytes, Envelope]] = []
        for entry_id, fields in entries:
            envelope = self._envelope(stream, entry_id, fields, publisher)
            if envelope is None or envelope.type not in self._types:
                ack_now.append(entry_id)  # trimmed, malformed, or not for this subscriber
            else:
                taken.append((entry_id, envelope))
        token, now = str(uuid.uuid4()), time.time()
        fresh: set[str] = set()
        if taken:
            fresh = await self.db.write(
                lambda c: _inbox.ingest(
                    c,
                    self._table,
                    [e for _, e in taken],
                    token=token,
                    now=now,
                    lease_s=self._lease_s,
                )
            )
        deliver: list[Envelope] = []
        entry_of: dict[str, bytes] = {}
        for entry_id, envelope in taken:
            if envelope.event_id in fresh and envelope.event_id not in entry_of:
                deliver.append(envelope)
                entry_of[envelope.event_id] = entry_id
            else:
                ack_now.append(entry_id)  # already in the inbox: delivered from there, once
        if ack_now:
            await self._require_redis().xack(stream, self.module, *ack_now)
        await self._deliver_all(deliver, token, stream=stream, entry_of=entry_of)
        return len(entries)

    def _envelope(
        self, stream: str, entry_id: bytes, fields: Mapping[bytes, bytes] | None, publisher: str
    ) -> Envelope | None:
        if not fields:
            return None
        try:
            return Envelope.from_fields(fields, publisher)
        except (KeyError, ValueError, UnicodeDecodeError):
            self.log.error(
                "malformed stream entry skipped",
                extra={**self.extra, "stream": stream, "entry": _text(entry_id)},
            )
            return None

    async def _deliver_due(self) -> int:
        token, now = str(uuid.uuid4()), time.time()
        claimed = await self.db.write(
            lambda c: _inbox.claim(
                c,
                self._table,
                self._types,
                token=token,
                now=now,
                lease_s=self._lease_s,
                limit=_CLAIM_BATCH,
            )
        )
        await self._deliver_all(claimed, token)
        return len(claimed)

    async def _deliver_all(
        self,
        envelopes: Sequence[Envelope],
        token: str,
        *,
        stream: str | None = None,
        entry_of: Mapping[str, bytes] | None = None,
    ) -> None:
        """Deliver leased rows in order, acknowledging each one's stream entry when it has one.

        Rows not attempted (stop, half the lease gone, an error) are given back; their entries
        are then acknowledged too, except after an error (they are reclaimed later).
        """
        client = self._require_redis()
        leased_at, done = time.monotonic(), 0
        try:
            for envelope in envelopes:
                if self.stopping.is_set() or time.monotonic() - leased_at > self._lease_s / 2:
                    break
                await self._deliver(envelope, token)
                done += 1
                if stream is not None and entry_of is not None:
                    await client.xack(stream, self.module, entry_of[envelope.event_id])
        finally:
            if done < len(envelopes):
                await asyncio.shield(self.db.write(lambda c: _inbox.release(c, self._table, token)))
        rest = [entry_of[e.event_id] for e in envelopes[done:]] if entry_of is not None else []
        if stream is not None and rest:
            await client.xack(stream, self.module, *rest)

    async def _deliver(self, e: Envelope, token: str) -> None:
        error = await handle(
            self._subs,
            e,
            subscriber=self.module,
            publisher=e.publisher,
            logger=self.log,
            max_attempts=self._retry.max_attempts,
        )
        retry_at = self._retry.retry_at(e.attempts + 1, error)
        await self.db.write(
            lambda c: _inbox.finish(
                c, self._table, e, token=token, now=time.time(), error=error, retry_at=retry_at
            )
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
