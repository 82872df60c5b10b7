"""Correctness checks of ``bench.materialize``: what the stores answer after a run against an
in-memory reference computed from the file with numpy, never through Quarry's code.

The reference follows the stores' documented rules. Online, an entity holds its row with the
greatest event time. Offline, one row per entity and event time is kept, and a point-in-time read
at ``t`` answers the row with the greatest event time ``<= t`` (the view has no TTL), nothing
before the first event. Rows of one entity with equal event times are ties: the file has no
``created_timestamp`` column, so the row later in the file wins (chunks are written in file
order, a chunk's rows sorted stably by event time, and an equal event replaces the stored one).

The reads go through the features contract as a user's would: ``get_online`` for every entity,
``--check-batch`` entities a call, and ``get_historical`` for a sample of entity rows at chosen
times: exactly at an event, between two events, before the first and after the last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.features import GetHistoricalFeatures, GetOnlineFeatures, Value

__all__ = ["Check", "Reference", "check_historical", "check_online"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXAMPLES = 5
_KINDS = ("at an event", "between events", "before the first event", "after the last event")
_KIND_SHARES = (0.2, 0.5, 0.15, 0.15)


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One comparison of what a store answers with the reference."""

    stores: str
    check: str
    rows: int
    """Entity rows compared (each with every feature, and online its event time)."""
    mismatches: int
    seconds: float
    details: dict[str, int] = {}
    examples: list[str] = []
    """The first few mismatches, described."""


@dataclass(frozen=True)
class Reference:
    """The file's rows sorted by entity, event time and position, deduplicated per entity and
    event time (the last row wins), as numpy arrays."""

    entity: np.ndarray
    event_us: np.ndarray
    values: np.ndarray
    """One row of feature values per kept row, ``features`` columns."""
    features: list[str]
    tied_rows: int
    """Rows replaced by a later row of the same entity and event time."""

    @classmethod
    def from_file(cls, path: Path, entity: str, features: list[str]) -> Reference:
        """Read the file whole with pyarrow and sort it with numpy."""
        table = pq.read_table(path)
        entities = table.column(entity).to_numpy()
        event_us = pc.cast(table.column("event_timestamp"), "int64").to_numpy()
        position = np.arange(len(entities))
        order = np.lexsort((position, event_us, entities))
        entities, event_us = entities[order], event_us[order]
        last = np.ones(len(order), dtype=bool)  # last of its (entity, event) run
        last[:-1] = (entities[1:] != entities[:-1]) | (event_us[1:] != event_us[:-1])
        values = np.column_stack([table.column(f).to_numpy()[order[last]] for f in features])
        return cls(
            entity=entities[last],
            event_us=event_us[last],
            values=values,
            features=features,
            tied_rows=int((~last).sum()),
        )

    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of each entity's newest row, and the entities, in ascending order."""
        newest = np.ones(len(self.entity), dtype=bool)
        newest[:-1] = self.entity[1:] != self.entity[:-1]
        return np.flatnonzero(newest), self.entity[newest]

    def at(self, entity: int, t_us: int) -> int | None:
        """Index of the entity's row with the greatest event time ``<= t_us``, if any."""
        low = int(np.searchsorted(self.entity, entity, "left"))
        high = int(np.searchsorted(self.entity, entity, "right"))
        found = low + int(np.searchsorted(self.event_us[low:high], t_us, "right")) - 1
        return found if found >= low else None


async def check_online(features: Any, view: str, ref: Reference, label: str, batch: int) -> Check:
    """Every entity's online values and event time against its newest row."""
    started = time.perf_counter()
    rows, entities = ref.latest()
    names = [f"{view}:{f}" for f in ref.features]
    mismatches, examples = 0, list[str]()
    for start in range(0, len(entities), batch):
        ids = entities[start : start + batch].tolist()
        answer = await features.get_online(
            GetOnlineFeatures(features=names, entities={"user_id": ids})
        )
        columns = answer.results[1:]
        for i, entity in enumerate(ids):
            row = int(rows[start + i])
            got = [c.values[i] for c in columns]
            when = {c.event_timestamps[i] for c in columns}
            expected = ref.values[row].tolist()
            if got != expected or when != {_time(int(ref.event_us[row]))}:
                mismatches += 1
                if len(examples) < _EXAMPLES:
                    examples.append(
                        f"user_id={entity}: {_differences(ref.features, got, expected)}; event"
                        f" {sorted(map(str, when))}, expected {_time(int(ref.event_us[row]))}"
                    )
    return Check(
        stores=label,
        check="online: latest row per entity",
        rows=len(entities),
        mismatches=mismatches,
        seconds=time.perf_counter() - started,
        examples=examples,
    )


async def check_historical(
    features: Any, view: str, ref: Reference, label: str, samples: int, seed: int
) -> Check:
    """A point-in-time read of ``samples`` entity rows against :meth:`Reference.at`."""
    started = time.perf_counter()
    entity_rows, asked, kinds = _sample(ref, samples, seed)
    names = [f"{view}:{f}" for f in ref.features]
    request = GetHistoricalFeatures(features=names, entity_rows=entity_rows)
    answer = await features.get_historical(request)
    mismatches, examples = 0, list[str]()
    details = dict.fromkeys(_KINDS, 0)
    for row, (entity, t_us), kind, got_row in zip(
        entity_rows, asked, kinds, answer.rows, strict=True
    ):
        details[kind] += 1
        found = ref.at(entity, t_us)
        expected = [None] * len(names) if found is None else ref.values[found].tolist()
        got = [got_row.get(name) for name in names]
        if got != expected:
            mismatches += 1
            if len(examples) < _EXAMPLES:
                examples.append(f"{row} ({kind}): {_differences(ref.features, got, expected)}")
    return Check(
        stores=label,
        check="historical: point-in-time rows",
        rows=len(entity_rows),
        mismatches=mismatches,
        seconds=time.perf_counter() - started,
        details=details,
        examples=examples,
    )


def _sample(
    ref: Reference, samples: int, seed: int
) -> tuple[list[dict[str, Value]], list[tuple[int, int]], list[str]]:
    """Entity rows at times of each kind, for entities picked at random; with each, its entity
    and time in microseconds, and the kind of time."""
    rng = np.random.default_rng(seed)
    starts = np.flatnonzero(np.r_[True, ref.entity[1:] != ref.entity[:-1]])
    ends = np.r_[starts[1:], len(ref.entity)]
    rows: list[dict[str, Value]] = []
    asked: list[tuple[int, int]] = []
    kinds: list[str] = []
    picks = rng.integers(0, len(starts), size=samples)
    chosen = rng.choice(len(_KINDS), size=samples, p=_KIND_SHARES)
    for pick, wanted in zip(picks, chosen, strict=True):
        low, high = int(starts[pick]), int(ends[pick])
        kind, t = _moment(rng, ref.event_us[low:high], int(wanted))
        entity = int(ref.entity[low])
        rows.append({"user_id": entity, "event_timestamp": _time(t).isoformat()})
        asked.append((entity, t))
        kinds.append(_KINDS[kind])
    return rows, asked, kinds


def _moment(rng: np.random.Generator, times: np.ndarray, kind: int) -> tuple[int, int]:
    """A time of ``kind`` (an index of ``_KINDS``) among an entity's event ``times``."""
    if kind == 1 and len(times) < 2:
        kind = 0  # one event only: nothing lies between
    if kind == 0:
        return kind, int(rng.choice(times))
    if kind == 1:
        i = int(rng.integers(0, len(times) - 1))
        return kind, int(times[i] + (times[i + 1] - times[i]) // 2)  # events are whole seconds
    day = int(rng.integers(1, 86_400_000_000))
    return kind, int(times[0]) - day if kind == 2 else int(times[-1]) + day


def _differences(names: list[str], got: list[Any], expected: list[Any]) -> str:
    """Which features differ, the first with both values."""
    wrong = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    if not wrong:
        return "values equal"
    first = wrong[0]
    return (
        f"{len(wrong)} of {len(names)} features differ, {names[first]} = {got[first]!r},"
        f" expected {expected[first]!r}"
    )


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)
