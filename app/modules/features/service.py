"""``LocalFeaturesService``: the features contract over the module's database and online store."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import msgspec
from sqlalchemy.engine import Connection

from app.kernel.db import Database
from app.kernel.events import Outbox
from app.modules.features import expectations, store
from app.modules.features.historical_files import feature_dtypes, write_historical
from app.modules.features.keys import from_micros
from app.modules.features.materialize import Materializer
from app.modules.features.online import OnlineStore
from app.modules.features.reads import (
    Resolved,
    check_entity_rows,
    read_historical,
    read_online,
)
from app.modules.features.rows import check_view, entity_columns, parse_ref, pushed_rows
from app.modules.features.sources import check_source
from app.modules.features.vectors import Vectorizer, check_service
from contracts.common import InvalidInput, NotFound, Page, validate_name
from contracts.features import (
    FeatureColumn,
    FeatureExpectations,
    FeatureService,
    FeatureVectors,
    FeatureView,
    FeatureViewChanged,
    FitTransforms,
    GetExpectations,
    GetFeatureService,
    GetFeatureView,
    GetHistoricalFeatures,
    GetMaterialization,
    GetOnlineFeatures,
    GetOnlineVectors,
    GetTransformState,
    HistoricalChunk,
    HistoricalFeatures,
    IngestProgress,
    ListFeatureServices,
    ListFeatureViews,
    Materialization,
    Materialize,
    OnlineFeatures,
    OnlineMetadata,
    PushResult,
    PushRows,
    PutExpectations,
    PutFeatureService,
    PutFeatureView,
    StreamRows,
    TransformRows,
    TransformState,
    Value,
)

__all__ = ["LocalFeaturesService"]

MAX_PAGE = 500
IMMUTABLE_CACHE = 1024
"""Service versions and transform states kept in memory (all are dropped when it fills)."""


class LocalFeaturesService:
    """Views, services and transform states in SQL; values offline in SQL, online in ``online``."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        online: OnlineStore,
        logger: logging.Logger,
        future_tolerance_s: float = 300.0,
        materializer: Callable[[LocalFeaturesService], Materializer] | None = None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._online = online
        self._log = logger
        self._tolerance_s = future_tolerance_s
        self._vectors = Vectorizer(self)
        self._immutable: dict[tuple[object, ...], FeatureService | TransformState] = {}
        self._materializer = materializer(self) if materializer is not None else None

    async def start(self) -> None:
        """Start materialization (requeued runs, the schedule)."""
        if self._materializer is not None:
            await self._materializer.start()

    async def close(self) -> None:
        """Stop materialization; release the online store's connections."""
        if self._materializer is not None:
            await self._materializer.close()
        await self._online.close()

    # --- views ----------------------------------------------------------------------------

    async def put_view(self, request: PutFeatureView) -> FeatureView:
        check_view(request)
        if request.source is not None:
            policy = self._sources().policy
            await asyncio.to_thread(check_source, request, policy)

        def put(conn: Connection) -> FeatureView:
            latest = store.latest_view(conn, request.name)
            if latest is not None and _same_view(latest, request):
                return latest
            view = FeatureView(
                name=request.name,
                version=1 if latest is None else latest.version + 1,
                entities=request.entities,
                features=request.features,
                ttl_seconds=request.ttl_seconds,
                description=request.description,
                tags=request.tags,
                created_at=datetime.now(UTC),
                source=request.source,
            )
            store.insert_view(conn, view)
            self._outbox.add(conn, FeatureViewChanged(name=view.name, version=view.version))
            return view

        return await self._db.write(put)

    async def get_view(self, request: GetFeatureView) -> FeatureView:
        def get(conn: Connection) -> FeatureView | None:
            view = _find_view(conn, request)
            if view is None:
                return None
            rows, newest = store.offline_stats(conn, view.name)
            newest_at = None if newest is None else from_micros(newest)
            return msgspec.structs.replace(view, rows=rows, newest_event_at=newest_at)

        return _found(request, await self._db.read(get))

    async def find_view(self, request: GetFeatureView) -> FeatureView:
        """The view as :meth:`get_view` answers it, without counting its rows (pushes and
        materialization read the view on every call)."""
        return _found(request, await self._db.read(lambda conn: _find_view(conn, request)))

    async def list_views(self, request: ListFeatureViews) -> Page[FeatureView]:
        limit = _limit(request.limit)
        items, cursor = await self._db.read(
            lambda conn: store.page_views(conn, limit, request.cursor)
        )
        return Page(items=items, next_cursor=cursor)

    async def all_views(self) -> list[FeatureView]:
        """Every view (latest versions)."""
        found: list[FeatureView] = []
        cursor = None
        while True:
            items, cursor = await self._db.read(
                functools.partial(store.page_views, limit=MAX_PAGE, cursor=cursor)
            )
            found += items
            if cursor is None:
                return found

    # --- materialization --------------------------------------------------------------------

    def _sources(self) -> Materializer:
        if self._materializer is None:
            raise InvalidInput("this features module reads no sources (no materializer)")
        return self._materializer

    async def materialize(self, request: Materialize) -> Materialization:
        return await self._sources().submit(request)

    async def get_materialization(self, request: GetMaterialization) -> Materialization:
        return await self._sources().get(request.id)

    async def write_rows(
        self, view: FeatureView, rows: list[tuple[str, int, dict[str, Value]]]
    ) -> PushResult:
        """Write checked rows online and offline, as a push does."""
        return await self._write(view, rows, "online_and_offline")

    # --- services ---------------------------------------------------------------------------

    async def put_service(self, request: PutFeatureService) -> FeatureService:
        validate_name(request.name, what="feature service name")
        resolved = await self.resolve(request.features, what="feature service")
        check_service(request, resolved)

        def put(conn: Connection) -> FeatureService:
            latest = store.latest_service(conn, request.name)
            if latest is not None and _same_service(latest, request):
                return latest
            service = FeatureService(
                name=request.name,
                version=1 if latest is None else latest.version + 1,
                features=request.features,
                transforms=request.transforms,
                description=request.description,
                created_at=datetime.now(UTC),
            )
            store.insert_service(conn, service)
            return service

        return await self._db.write(put)

    async def get_service(self, request: GetFeatureService) -> FeatureService:
        name, version = _service_ref(request.name, request.version)
        known = self._immutable.get(("service", name, version)) if version else None
        if isinstance(known, FeatureService):
            return known

        def get(conn: Connection) -> FeatureService | None:
            if version is None:
                return store.latest_service(conn, name)
            return store.get_service(conn, name, version)

        service = await self._db.read(get)
        if service is None:
            suffix = "" if version is None else f" version {version}"
            raise NotFound(f"no feature service {name!r}{suffix}")
        self._remember(("service", service.name, service.version), service)
        return service

    async def list_services(self, request: ListFeatureServices) -> Page[FeatureService]:
        limit = _limit(request.limit)
        items, cursor = await self._db.read(
            lambda conn: store.page_services(conn, limit, request.cursor)
        )
        return Page(items=items, next_cursor=cursor)

    # --- ingestion --------------------------------------------------------------------------

    async def push(self, request: PushRows) -> PushResult:
        view = await self.find_view(GetFeatureView(name=request.view))
        rows = pushed_rows(view, request.rows, tolerance_s=self._tolerance_s)
        broken = await self._expected(view, rows)
        result = await self._write(view, rows, request.to)
        if not broken:
            return result
        await self._db.write(lambda conn: expectations.add_violations(conn, view.name, len(broken)))
        return msgspec.structs.replace(
            result,
            violations=len(broken),
            warnings=[str(v) for v in broken[: expectations.MAX_WARNINGS]],
        )

    async def _expected(
        self, view: FeatureView, rows: list[tuple[str, int, dict[str, Value]]]
    ) -> list[expectations.Violation]:
        """The violations of the view's expectations ``rows`` bring: raised as ``InvalidInput``
        (naming the first one's row and feature) when the view rejects them."""
        rules = await self._db.read(lambda conn: expectations.get_expectations(conn, view.name))
        broken = expectations.violations(view, rules.expectations, rows)
        if not broken:
            return []
        first = broken[0]
        if rules.on_violation == "reject":
            more = f" ({len(broken) - 1} more)" if len(broken) > 1 else ""
            raise InvalidInput(
                f"{first}{more}: the push breaks view {view.name!r}'s expectations",
                details={
                    "row": first.row,
                    "field": first.feature,
                    "expectation": first.kind,
                    "violations": len(broken),
                },
            )
        return broken

    async def put_expectations(self, request: PutExpectations) -> FeatureExpectations:
        view = await self.find_view(GetFeatureView(name=request.view))
        expectations.check_spec(view, request)
        return await self._db.write(lambda conn: expectations.put_expectations(conn, request))

    async def get_expectations(self, request: GetExpectations) -> FeatureExpectations:
        view = await self.find_view(GetFeatureView(name=request.view))
        return await self._db.read(lambda conn: expectations.get_expectations(conn, view.name))

    async def _write(
        self, view: FeatureView, rows: list[tuple[str, int, dict[str, Value]]], to: str
    ) -> PushResult:
        if to != "online":
            await self._db.write(lambda conn: store.write_offline(conn, view.name, rows))
        updated = 0
        if to != "offline":
            updated = await self._online.write(view.name, rows)
        return PushResult(
            view=view.name, version=view.version, rows=len(rows), online_updated=updated
        )

    async def ingest(self, request: StreamRows) -> AsyncIterator[IngestProgress]:
        if request.chunk_rows < 1:
            raise InvalidInput("chunk_rows must be at least 1")
        view = await self.find_view(GetFeatureView(name=request.view))
        # Every row is checked before the first chunk is written: one bad row writes nothing.
        rows = pushed_rows(view, request.rows, tolerance_s=self._tolerance_s)
        broken = await self._expected(view, rows)
        done = 0
        for start in range(0, len(rows), request.chunk_rows):
            chunk = rows[start : start + request.chunk_rows]
            await self._write(view, chunk, request.to)
            done += len(chunk)
            yield IngestProgress(view=view.name, rows=len(rows), rows_done=done)
        if broken:
            await self._db.write(
                lambda conn: expectations.add_violations(conn, view.name, len(broken))
            )

    # --- reads ------------------------------------------------------------------------------

    async def resolve(self, features: Sequence[str], *, what: str = "request") -> Resolved:
        """Feature references with their latest views; unknown ones are ``NotFound``."""
        if not features:
            raise InvalidInput(f"the {what} names no features: give 'view:feature' references")
        refs = [parse_ref(text) for text in features]
        seen: set[str] = set()
        for ref in refs:
            if str(ref) in seen:
                raise InvalidInput(f"feature {str(ref)!r} is named twice")
            seen.add(str(ref))
        names = list(dict.fromkeys(ref.view for ref in refs))

        def load(conn: Connection) -> dict[str, FeatureView | None]:
            return {name: store.latest_view(conn, name) for name in names}

        found = await self._db.read(load)
        views = {}
        for name, view in found.items():
            if view is None:
                raise NotFound(f"no feature view {name!r}", details={"view": name})
            views[name] = view
        for ref in refs:
            if not any(f.name == ref.feature for f in views[ref.view].features):
                raise NotFound(
                    f"view {ref.view!r} has no feature {ref.feature!r}",
                    details={"feature": str(ref)},
                )
        return Resolved(refs=refs, views=views)

    async def _requested(self, features: list[str], service: str | None) -> Resolved:
        names = list(features)
        if service is not None:
            spec = await self.get_service(GetFeatureService(name=service))
            names = [*spec.features, *(f for f in features if f not in spec.features)]
        return await self.resolve(names)

    async def get_online(self, request: GetOnlineFeatures) -> OnlineFeatures:
        resolved = await self._requested(request.features, request.service)
        rows = entity_columns(request.entities)
        columns = await read_online(self._online, resolved, request.entities, rows)
        keys = [
            FeatureColumn(
                values=list(values), statuses=["PRESENT"] * rows, event_timestamps=[None] * rows
            )
            for values in request.entities.values()
        ]
        features = [
            FeatureColumn(values=c.values, statuses=c.statuses, event_timestamps=c.timestamps)
            for c in columns
        ]
        names = [*request.entities, *(str(ref) for ref in resolved.refs)]
        return OnlineFeatures(metadata=OnlineMetadata(feature_names=names), results=keys + features)

    async def get_historical(self, request: GetHistoricalFeatures) -> HistoricalFeatures:
        if request.output is not None:
            resolved = await self._requested(request.features, request.service)
            chunks = self.stream_historical(msgspec.structs.replace(request, output=None))
            policy, dtypes = self._sources().policy, feature_dtypes(resolved)
            return await write_historical(chunks, request.output, policy, dtypes)
        rows = []
        async for chunk in self.stream_historical(request):
            rows.extend(chunk.rows)
        return HistoricalFeatures(rows=rows)

    async def stream_historical(
        self, request: GetHistoricalFeatures
    ) -> AsyncIterator[HistoricalChunk]:
        if request.entity_source is not None and request.entity_rows:
            raise InvalidInput("give entity_rows or an entity_source, not both")
        if not request.entity_rows and request.entity_source is None:
            raise InvalidInput("no entity rows: give at least one row with join keys and time")
        if request.chunk_rows < 1:
            raise InvalidInput("chunk_rows must be at least 1")
        if request.output is not None:
            raise InvalidInput("output is for get_historical: stream_historical streams the rows")
        resolved = await self._requested(request.features, request.service)
        if request.entity_source is not None:
            chunks = self._sources().entity_rows(request.entity_source, request.chunk_rows)
        else:
            chunks = _slices(request.entity_rows, request.chunk_rows)
        start = 0
        async for chunk in chunks:
            check_entity_rows(resolved, chunk)
            rows = await self._db.read(
                functools.partial(read_historical, resolved=resolved, entity_rows=chunk)
            )
            yield HistoricalChunk(offset=start, rows=rows)
            start += len(chunk)
        if not start:
            raise InvalidInput(
                "the entity source holds no rows", details={"field": "entity_source"}
            )

    # --- transforms -------------------------------------------------------------------------

    async def fit_transforms(self, request: FitTransforms) -> TransformState:
        service = await self.get_service(
            GetFeatureService(name=request.service, version=request.version)
        )
        if request.entity_rows and request.rows:
            raise InvalidInput("give either entity_rows or rows to fit on, not both")
        rows = request.rows
        if request.entity_rows:
            historical = await self.get_historical(
                GetHistoricalFeatures(features=service.features, entity_rows=request.entity_rows)
            )
            rows = historical.rows
        fitted = await self._vectors.fit(service, rows)
        state = TransformState(
            id=f"ts-{uuid.uuid4().hex}",
            service=service.name,
            service_version=service.version,
            params=fitted.params,
            columns=fitted.columns,
            rows=len(rows),
            created_at=datetime.now(UTC),
        )
        await self._db.write(lambda conn: store.insert_state(conn, state))
        return state

    async def get_transform_state(self, request: GetTransformState) -> TransformState:
        known = self._immutable.get(("state", request.id))
        if isinstance(known, TransformState):
            return known
        state = await self._db.read(lambda conn: store.get_state(conn, request.id))
        if state is None:
            raise NotFound(f"no transform state {request.id!r}")
        self._remember(("state", state.id), state)
        return state

    def _remember(self, key: tuple[object, ...], value: FeatureService | TransformState) -> None:
        """Keep a service version or transform state (both never change) for later calls:
        predicting by entity reads them on every request."""
        if len(self._immutable) >= IMMUTABLE_CACHE:
            self._immutable.clear()
        self._immutable[key] = value

    async def transform_rows(self, request: TransformRows) -> FeatureVectors:
        state = await self.get_transform_state(GetTransformState(id=request.state))
        return await self._vectors.offline(state, request.rows)

    async def get_online_vectors(self, request: GetOnlineVectors) -> FeatureVectors:
        service = await self.get_service(
            GetFeatureService(name=request.service, version=request.version)
        )
        state: TransformState | None
        if request.state is not None:
            state = await self.get_transform_state(GetTransformState(id=request.state))
        else:
            state = await self._db.read(
                lambda conn: store.latest_state(conn, service.name, service.version)
            )
            if state is None:
                raise NotFound(
                    f"feature service {service.name}:{service.version} has no fitted transform"
                    " state yet (fit_transforms makes one; training does it)"
                )
        return await self._vectors.online(service, state, request.entities, request.overrides)

    async def read_online_columns(
        self, resolved: Resolved, entities: dict[str, Sequence[Value]], rows: int
    ) -> list[list[Value]]:
        """Raw online values per reference (``None`` when missing, null or too old)."""
        columns = await read_online(self._online, resolved, entities, rows)
        return [column.values for column in columns]


async def _slices(rows: list[dict[str, Value]], size: int) -> AsyncIterator[list[dict[str, Value]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _find_view(conn: Connection, request: GetFeatureView) -> FeatureView | None:
    if request.version is None:
        return store.latest_view(conn, request.name)
    return store.get_view(conn, request.name, request.version)


def _found(request: GetFeatureView, view: FeatureView | None) -> FeatureView:
    if view is None:
        suffix = "" if request.version is None else f" version {request.version}"
        raise NotFound(f"no feature view {request.name!r}{suffix}")
    return view


def _same_view(view: FeatureView, request: PutFeatureView) -> bool:
    return (
        view.entities == request.entities
        and view.features == request.features
        and view.ttl_seconds == request.ttl_seconds
        and view.description == request.description
        and view.tags == request.tags
        and view.source == request.source
    )


def _same_service(service: FeatureService, request: PutFeatureService) -> bool:
    return (
        service.features == request.features
        and msgspec.to_builtins(service.transforms) == msgspec.to_builtins(request.transforms)
        and service.description == request.description
    )


def _service_ref(name: str, version: int | None) -> tuple[str, int | None]:
    base, sep, number = name.partition(":")
    if not sep:
        return name, version
    if not number.isdigit() or (version is not None and int(number) != version):
        raise InvalidInput(f"feature service reference {name!r} is not 'name' or 'name:N'")
    return base, int(number)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    return limit
