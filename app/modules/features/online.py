"""The online store: the newest values of each view and entity, behind one Protocol.

Two backends: :class:`SqlOnlineStore`, the embedded default on the module's own database
(``features_online``), and :class:`RedisOnlineStore`. Both keep, per view and entity key, the
row with the greatest event timestamp: an older event never overwrites a newer one, an equal one
replaces it. :func:`open_online_store` picks one by URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.kernel.db import Database
from app.modules.features import store
from contracts.features import Value

__all__ = ["OnlineStore", "RedisOnlineStore", "SqlOnlineStore", "open_online_store"]

Row = tuple[str, int, dict[str, Value]]
"""``(entity_key, event_ts micros, values)``."""

Found = dict[str, tuple[int, dict[str, Value]]]
"""What one entity has: view -> ``(event_ts micros, values)``; an absent view was not found."""


class OnlineStore(Protocol):
    """Newest values per view and entity key."""

    async def write(self, view: str, rows: Sequence[Row]) -> int:
        """Keep each row unless the entity already has a newer one; answers how many moved.

        An entity moved when its event is newer than the stored one, or as old with other
        values (which replace the stored ones). Of several rows of one entity the newest counts
        (the last of equally new ones).
        """
        ...

    async def read(self, views: Sequence[str], entity_keys: Sequence[str]) -> list[Found]:
        """One :data:`Found` per entity key, in the same order."""
        ...

    async def close(self) -> None:
        """Let go of connections (the SQL store leaves its database to its owner)."""
        ...


def open_online_store(url: str | None, db: Database, prefix: str) -> OnlineStore:
    """The store at ``url``: ``redis://``/``rediss://``, else (``None``, ``sqlite:``,
    ``postgresql:``) the features database ``db`` itself. ``prefix`` starts every Redis key."""
    scheme = (url or "").split(":", 1)[0]
    if scheme in ("redis", "rediss"):
        return RedisOnlineStore(url or "", prefix)
    if url is None or scheme.startswith(("sqlite", "postgres")):
        return SqlOnlineStore(db)
    raise ValueError(f"unsupported online store URL scheme {scheme!r}: use redis:// or a database")


def _newest(rows: Sequence[Row]) -> dict[str, tuple[int, dict[str, Value]]]:
    newest: dict[str, tuple[int, dict[str, Value]]] = {}
    for entity_key, ts, values in rows:
        kept = newest.get(entity_key)
        if kept is None or ts >= kept[0]:
            newest[entity_key] = (ts, values)
    return newest


# --- SQL ----------------------------------------------------------------------------------------

_READ_KEYS = 500
"""Entity keys per ``IN (...)`` list when reading."""


class SqlOnlineStore:
    """The online store in the module's database (table ``features_online``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, view: str, rows: Sequence[Row]) -> int:
        newest = _newest(rows)
        if not newest:
            return 0
        params = [
            {"view": view, "entity_key": key, "event_ts": ts, "values": values}
            for key, (ts, values) in newest.items()
        ]
        return await self.db.write(lambda conn: _upsert(conn, params))

    async def read(self, views: Sequence[str], entity_keys: Sequence[str]) -> list[Found]:
        if not views or not entity_keys:
            return [{} for _ in entity_keys]
        found = await self.db.read(lambda conn: _select(conn, views, entity_keys))
        return [dict(found.get(key, {})) for key in entity_keys]

    async def close(self) -> None:
        return None


def _upsert(conn: Connection, params: list[dict[str, Any]]) -> int:
    table = store.online_rows
    insert = store.upsert(conn, table)
    stored_ts, new_ts = table.c.event_ts, insert.excluded.event_ts
    changed = sa.cast(insert.excluded["values"], sa.Text) != sa.cast(table.c["values"], sa.Text)
    statement = insert.on_conflict_do_update(
        index_elements=["view", "entity_key"],
        set_={"event_ts": new_ts, "values": insert.excluded["values"]},
        where=sa.or_(new_ts > stored_ts, sa.and_(new_ts == stored_ts, changed)),
    ).returning(table.c.entity_key)
    return len(conn.execute(statement, params).all())


def _select(conn: Connection, views: Sequence[str], entity_keys: Sequence[str]) -> dict[str, Found]:
    table = store.online_rows
    columns = (table.c.view, table.c.entity_key, table.c.event_ts, table.c["values"])
    unique = list(dict.fromkeys(entity_keys))
    found: dict[str, Found] = {}
    for start in range(0, len(unique), _READ_KEYS):
        query = sa.select(*columns).where(
            table.c.view.in_(views), table.c.entity_key.in_(unique[start : start + _READ_KEYS])
        )
        for view, entity_key, ts, values in conn.execute(query):
            found.setdefault(entity_key, {})[view] = (ts, values)
    return found


# --- Redis --------------------------------------------------------------------------------------

_WRITE = """
local tfield, vfield = ARGV[1], ARGV[2]
local moved = 0
for i, key in ipairs(KEYS) do
  local ts, value = ARGV[2 * i + 1], ARGV[2 * i + 2]
  local stored = redis.call('HMGET', key, tfield, vfield)
  local old, new = tonumber(stored[1]), tonumber(ts)
  if (not old) or new > old or (new == old and stored[2] ~= value) then
    redis.call('HSET', key, tfield, ts, vfield, value)
    moved = moved + 1
  end
end
return moved
"""
"""KEYS: entity hashes; ARGV: the view's two field names, then ``ts, msgpack values`` per key.

Atomic per call: the newer-wins check and the set cannot interleave with another writer.
Timestamps compare as Lua numbers (doubles): exact for microseconds up to year 2255."""

_READ = """
local fields, parts = #ARGV, {struct.pack('>BI4', 0xdd, #KEYS * #ARGV)}
for _, key in ipairs(KEYS) do
  local got = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, fields do
    local value = got[j]
    if not value then
      parts[#parts + 1] = '\\192'
    elseif j % 2 == 1 then
      parts[#parts + 1] = struct.pack('>BI4', 0xdb, #value) .. value
    else
      parts[#parts + 1] = value
    end
  end
end
return table.concat(parts)
"""
"""KEYS: entity hashes; ARGV: ``t:`` and ``v:`` fields, alternating. Answers one msgpack array
of every ``HMGET`` answer end to end: a timestamp as a string, values as the msgpack map they
are stored as (inline), a missing field as nil.

One bulk reply decoded by msgspec in one call: with redis-py's own reply parser, a pipeline of
100 ``HMGET`` costs the client about 2.3 ms of CPU, this about 0.3 ms (``bench/features_store.py``).
"""

_BATCH_KEYS = 1000
"""Entities per script call (writes and reads)."""

_encode = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder(dict[str, Any])
_decode_read = msgspec.msgpack.Decoder(list[str | dict[str, Any] | None])


class RedisOnlineStore:
    """The online store on Redis: one hash per entity key, ``{prefix}features:{entity_key}``.

    Each view has two fields there: ``v:{view}`` (the values, msgpack) and ``t:{view}`` (the
    event timestamp in microseconds, as decimal text). Views sharing join keys share the hash,
    so one ``HMGET`` reads all of an entity's views. Writes and reads of several entities run
    Lua scripts (``EVALSHA``), up to 1000 entities per call, each call one round trip and
    atomic; one entity is read with a plain ``HMGET``. The client belongs to the event loop
    that first uses it; :meth:`close` releases it. (The scripts name several keys: a Redis
    Cluster would need the keys in one hash slot.)
    """

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio

        self.prefix = prefix
        self.client = redis.asyncio.Redis.from_url(url)
        self._write = self.client.register_script(_WRITE)
        self._read = self.client.register_script(_READ)

    def key(self, entity_key: str) -> str:
        """The hash of ``entity_key``."""
        return f"{self.prefix}features:{entity_key}"

    async def write(self, view: str, rows: Sequence[Row]) -> int:
        items = list(_newest(rows).items())
        moved = 0
        for start in range(0, len(items), _BATCH_KEYS):
            chunk = items[start : start + _BATCH_KEYS]
            args: list[str | bytes] = [f"t:{view}", f"v:{view}"]
            for _, (ts, values) in chunk:
                args += (str(ts), _encode.encode(values))
            keys = [self.key(entity_key) for entity_key, _ in chunk]
            moved += int(await self._write(keys=keys, args=args))
        return moved

    async def read(self, views: Sequence[str], entity_keys: Sequence[str]) -> list[Found]:
        if not views or not entity_keys:
            return [{} for _ in entity_keys]
        fields = [f"{kind}:{view}" for view in views for kind in ("t", "v")]
        if len(entity_keys) == 1:
            # The client decodes no responses (no ``decode_responses``): replies are bytes.
            stored = cast(
                "list[bytes | None]", await self.client.hmget(self.key(entity_keys[0]), fields)
            )
            answers: list[Any] = [
                _decode.decode(a) if i % 2 and a is not None else a for i, a in enumerate(stored)
            ]
        else:
            answers = []
            for start in range(0, len(entity_keys), _BATCH_KEYS):
                keys = [self.key(key) for key in entity_keys[start : start + _BATCH_KEYS]]
                answers += _decode_read.decode(await self._read(keys=keys, args=fields))
        width = len(fields)
        return [_found(views, answers[i : i + width]) for i in range(0, len(answers), width)]

    async def close(self) -> None:
        await self.client.aclose()


def _found(views: Sequence[str], answer: list[Any]) -> Found:
    """``answer``: timestamp (text) then values (decoded) per view, ``None`` where missing."""
    found: Found = {}
    for i, view in enumerate(views):
        ts, values = answer[2 * i], answer[2 * i + 1]
        if ts is not None and values is not None:
            found[view] = (int(ts), values)
    return found
