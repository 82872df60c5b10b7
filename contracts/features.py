"""The features contract: feature views, feature services, transforms, online and offline reads.

A **feature view** is a versioned schema of typed features keyed by entity join keys; rows are
pushed to it with an ``event_timestamp``. A **feature service** is a versioned list of feature
references (``view:feature``) plus declarative transforms; a **transform state** holds the
statistics those transforms were fitted on (on a training split only) and is immutable. Serving
and training turn raw feature rows into model inputs with the same transform state, so online and
offline vectors agree.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import msgspec

from contracts.common import (
    Count,
    Finite,
    Limit,
    Page,
    PositiveCount,
    RowCount,
    Scope,
    Share,
    Tensor,
    Version,
    method,
)

__all__ = [
    "EVENT_TIMESTAMP",
    "VERSION",
    "Bucketize",
    "Clip",
    "Derived",
    "Expectation",
    "Feature",
    "FeatureColumn",
    "FeatureDType",
    "FeatureExpectations",
    "FeatureService",
    "FeatureSource",
    "FeatureVectors",
    "FeatureView",
    "FeatureViewChanged",
    "FeaturesService",
    "FillMissing",
    "FitTransforms",
    "GetExpectations",
    "GetFeatureService",
    "GetFeatureView",
    "GetHistoricalFeatures",
    "GetMaterialization",
    "GetOnlineFeatures",
    "GetOnlineVectors",
    "GetTransformState",
    "HistoricalChunk",
    "HistoricalFeatures",
    "IngestProgress",
    "ListFeatureServices",
    "ListFeatureViews",
    "Log1p",
    "Materialization",
    "MaterializationStatus",
    "Materialize",
    "MinMax",
    "OneHot",
    "OnlineFeatures",
    "OnlineMetadata",
    "PushResult",
    "PushRows",
    "PutExpectations",
    "PutFeatureService",
    "PutFeatureView",
    "Standardize",
    "StreamRows",
    "Transform",
    "TransformRows",
    "TransformState",
    "Value",
    "ValueStatus",
]

VERSION = (1, 5)
"""Contract version ``(major, minor)``; remote calls refuse a different major.

1.1: numeric fields carry their bounds (versions, limits, TTLs, chunk sizes, clip bounds).
1.2: a view's ``source`` (Parquet, CSV or a PostgreSQL table or query) and its materialization.
1.3: ``get_view`` answers the view's offline ``rows`` and ``newest_event_at``.
1.4: ``s3://`` sources; ``get_historical`` may write its rows to a Parquet ``output`` (a path
under the source roots or an ``s3://`` URL) and answer where and how many.
1.5: data expectations of a view (``put_expectations``, ``get_expectations``), checked on push;
a push answers the ``violations`` it let through and their ``warnings``.
"""

EVENT_TIMESTAMP = "event_timestamp"
"""The field every pushed row and every entity row carries: ISO 8601 text or epoch seconds."""

Value = int | float | bool | str | list[float] | None
"""One feature or entity key value as it travels (``float_vector`` features are lists)."""

FeatureDType = Literal["int", "float", "bool", "string", "float_vector"]

ValueStatus = Literal["PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"]
"""Why an online value is what it is (Feast's statuses)."""


# --- views ----------------------------------------------------------------------------------


class FeatureSource(msgspec.Struct, frozen=True, kw_only=True):
    """Where a view's rows live, read by :meth:`FeaturesService.materialize`.

    ``format="parquet"`` or ``"csv"``: ``path`` is a file or a directory of such files, relative
    to the server's first source root or absolute under one of them (the features module's
    ``source_roots``; nothing outside them is ever read). ``format="postgresql"``: ``database``
    names a configured database (the module's ``source_databases``, by name or by its exact
    URL) and one of ``table`` (``name`` or ``schema.name``) or ``query`` (SQL text, read in a
    read-only transaction through a server-side cursor).

    Columns: each join key is read from ``entities[key]`` (default: the column of its name),
    each feature from ``columns[feature]`` (default: its name); ``event_timestamp`` names the
    column of event times (a timestamp, ISO 8601 text or epoch seconds) and
    ``created_timestamp`` an optional column breaking ties between rows of one entity and event
    time (the later created wins). ``materialize_every_seconds`` (0 = never) runs the view's
    materialization on that schedule.
    """

    format: Literal["parquet", "csv", "postgresql"]
    path: str | None = None
    database: str | None = None
    table: str | None = None
    query: str | None = None
    entities: dict[str, str] = {}
    columns: dict[str, str] = {}
    event_timestamp: str = EVENT_TIMESTAMP
    created_timestamp: str | None = None
    materialize_every_seconds: Count = 0


class Feature(msgspec.Struct, frozen=True, kw_only=True):
    """One typed feature of a view.

    ``default`` stands in for a missing value when a model's inputs are built; with
    ``on_missing="error"`` a missing value is an ``UnprocessableInput`` instead.
    """

    name: str
    dtype: FeatureDType
    default: Value = None
    on_missing: Literal["default", "error"] = "default"
    description: str = ""


class FeatureView(msgspec.Struct, frozen=True, kw_only=True):
    """A versioned feature schema keyed by ``entities`` (join key names).

    ``ttl_seconds`` (0 = forever) bounds how old a value may be, online and offline: a value
    counts when its event is less than ``ttl_seconds`` older than the moment asked about. Any
    change makes a new version; older versions stay readable. Rows belong to the view name and
    the latest version validates pushes. A view with a ``source`` is also filled from it by
    :meth:`FeaturesService.materialize`.

    On ``get_view`` (since contract 1.3) ``rows`` counts the rows the offline store holds for
    the view's name (every version's) and ``newest_event_at`` is the newest of their event
    times (``None`` when there are none); lists and ``put_view`` leave both ``None``.
    """

    name: str
    version: Version
    entities: list[str]
    features: list[Feature]
    ttl_seconds: Count = 0
    description: str = ""
    tags: dict[str, str] = {}
    created_at: datetime | None = None
    source: FeatureSource | None = None
    rows: RowCount | None = None
    newest_event_at: datetime | None = None


class PutFeatureView(msgspec.Struct, frozen=True, kw_only=True):
    """Create a view or change it (a change makes a new version; the same content: no-op).

    A ``source`` is checked here: its path or database must be allowed, reachable and hold
    every column the view reads, else ``InvalidInput`` naming what is wrong.
    """

    name: str
    entities: list[str]
    features: list[Feature]
    ttl_seconds: Count = 0
    description: str = ""
    tags: dict[str, str] = {}
    source: FeatureSource | None = None


class GetFeatureView(msgspec.Struct, frozen=True, kw_only=True):
    """A view by name: its latest version, or ``version``."""

    name: str
    version: Version | None = None


class ListFeatureViews(msgspec.Struct, frozen=True, kw_only=True):
    """One page of views (latest versions), by name."""

    limit: Limit = 50
    cursor: str | None = None


class FeatureViewChanged(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A view was created or got a new version."""

    name: str
    version: Version


# --- transforms -----------------------------------------------------------------------------
# Each transform reads ``input`` (a feature reference ``view:feature`` of the service, or the
# ``output`` of an earlier transform) and writes ``output`` (default: replaces ``input``).
# Statistics marked "fitted" are learnt by :meth:`FeaturesService.fit_transforms` when the
# spec leaves them unset.


class Standardize(msgspec.Struct, frozen=True, kw_only=True, tag="standardize"):
    """``(x - mean) / std`` (fitted: mean, std; a zero std divides by 1)."""

    input: str
    output: str | None = None


class MinMax(msgspec.Struct, frozen=True, kw_only=True, tag="min_max"):
    """``(x - min) / (max - min)`` into [0, 1] (fitted: min, max)."""

    input: str
    output: str | None = None


class Log1p(msgspec.Struct, frozen=True, kw_only=True, tag="log1p"):
    """``log(1 + x)``; values below -1 are an error naming the feature."""

    input: str
    output: str | None = None


class Clip(msgspec.Struct, frozen=True, kw_only=True, tag="clip"):
    """Clamp into ``[min, max]`` (either bound may be omitted)."""

    input: str
    output: str | None = None
    min: Finite | None = None
    max: Finite | None = None


class Bucketize(msgspec.Struct, frozen=True, kw_only=True, tag="bucketize"):
    """The bucket index of ``x`` given ascending ``boundaries`` (fitted: ``buckets`` quantiles)."""

    input: str
    output: str | None = None
    boundaries: list[Finite] | None = None
    buckets: PositiveCount = 4


class OneHot(msgspec.Struct, frozen=True, kw_only=True, tag="one_hot"):
    """One column per category (``output=<category>``); unknown values set no column.

    Fitted: ``categories`` (sorted distinct values, at most ``max_categories`` most frequent).
    """

    input: str
    output: str | None = None
    categories: list[str] | None = None
    max_categories: PositiveCount = 32


class FillMissing(msgspec.Struct, frozen=True, kw_only=True, tag="fill_missing"):
    """Replace missing values by ``value``, or by a fitted ``strategy`` (mean, median, mode)."""

    input: str
    output: str | None = None
    value: Value = None
    strategy: Literal["value", "mean", "median", "mode"] = "value"


class Derived(msgspec.Struct, frozen=True, kw_only=True, tag="derived"):
    """A new feature ``output`` from an arithmetic ``expression`` over the row's features.

    The expression language: numbers, feature references (``view:feature`` or an earlier
    output, quoted with backticks when not a plain name), ``+ - * / ** %``, comparisons,
    ``and or not``, ``a if cond else b`` and the functions ``abs log log1p exp sqrt min max
    clip``. It is parsed, never evaluated as Python.
    """

    output: str
    expression: str


Transform = Standardize | MinMax | Log1p | Clip | Bucketize | OneHot | FillMissing | Derived


# --- feature services -----------------------------------------------------------------------


class FeatureService(msgspec.Struct, frozen=True, kw_only=True):
    """What a model consumes: features (``view:feature``) then transforms, in order.

    The model input is a float32 matrix whose columns are :attr:`TransformState.columns`, fixed
    when the transforms are fitted: the features in order (a ``float_vector`` as one column per
    element), a transform without ``output`` replacing its input in place, one with an
    ``output`` appending a column, ``one_hot`` giving a column per category; string features
    must be one-hot encoded.
    """

    name: str
    version: Version
    features: list[str]
    transforms: list[Transform] = []
    description: str = ""
    created_at: datetime | None = None


class PutFeatureService(msgspec.Struct, frozen=True, kw_only=True):
    """Create a feature service or give it a new version (same content: no-op)."""

    name: str
    features: list[str]
    transforms: list[Transform] = []
    description: str = ""


class GetFeatureService(msgspec.Struct, frozen=True, kw_only=True):
    """A feature service by name (``name`` or ``name:N``) and optional version."""

    name: str
    version: Version | None = None


class ListFeatureServices(msgspec.Struct, frozen=True, kw_only=True):
    """One page of feature services (latest versions), by name."""

    limit: Limit = 50
    cursor: str | None = None


class FitTransforms(msgspec.Struct, frozen=True, kw_only=True):
    """Fit a service's transforms on a training split; answers a new :class:`TransformState`.

    The split is ``entity_rows`` (their features are read point-in-time from the offline store)
    or, for data that is not in the store, raw ``rows`` keyed by the service's ``view:feature``.
    """

    service: str
    version: Version | None = None
    entity_rows: list[dict[str, Value]] = []
    rows: list[dict[str, Value]] = []


class GetTransformState(msgspec.Struct, frozen=True, kw_only=True):
    """A transform state by id."""

    id: str


class TransformState(msgspec.Struct, frozen=True, kw_only=True):
    """Fitted statistics for one feature service version; ``params[i]`` belongs to transform i."""

    id: str
    service: str
    service_version: Version
    params: list[dict[str, Value]]
    columns: list[str]
    rows: Count
    created_at: datetime | None = None


class TransformRows(msgspec.Struct, frozen=True, kw_only=True):
    """Apply a transform state to raw feature rows (keys ``view:feature``) offline."""

    state: str
    rows: list[dict[str, Value]]


class FeatureVectors(msgspec.Struct, frozen=True, kw_only=True):
    """Model inputs: ``values`` is float32 ``[rows, len(columns)]``."""

    columns: list[str]
    values: Tensor
    state: str | None = None


class GetOnlineVectors(msgspec.Struct, frozen=True, kw_only=True):
    """Online model inputs for entities, through a feature service and transform state.

    ``entities`` maps each join key to one value per row; ``overrides`` (``view:feature`` ->
    one value per row, ``None`` = not overridden) replace fetched raw values before transforms.
    Missing values take the feature's default, or fail with ``UnprocessableInput`` naming the
    row and feature when the feature says ``on_missing="error"``.
    """

    service: str
    version: Version | None = None
    state: str | None = None
    entities: dict[str, list[Value]]
    overrides: dict[str, list[Value]] = {}


# --- ingestion ------------------------------------------------------------------------------


class PushRows(msgspec.Struct, frozen=True, kw_only=True):
    """Push rows into a view: each carries every join key, ``event_timestamp`` and features.

    Atomic: one bad row rejects the batch (the error names the row index and field). Re-pushing a
    row (same keys and timestamp) replaces it with the same values: nothing changes. Online, an
    older event never overwrites a newer one.
    """

    view: str
    rows: list[dict[str, Value]]
    to: Literal["online", "offline", "online_and_offline"] = "online_and_offline"


class PushResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a push did: ``rows`` accepted; ``online_updated`` entities whose value moved forward.

    Under expectations set to ``warn`` (since contract 1.5), ``violations`` counts the broken
    expectations the push let through and ``warnings`` describes the first of them (row index
    and feature, as a rejection would).
    """

    view: str
    version: Version
    rows: Count
    online_updated: Count = 0
    violations: Count = 0
    warnings: list[str] = []


class StreamRows(msgspec.Struct, frozen=True, kw_only=True):
    """Bulk ingestion: like :class:`PushRows`, committed ``chunk_rows`` rows at a time."""

    view: str
    rows: list[dict[str, Value]]
    to: Literal["online", "offline", "online_and_offline"] = "online_and_offline"
    chunk_rows: PositiveCount = 10_000


class IngestProgress(msgspec.Struct, frozen=True, kw_only=True):
    """Progress of a bulk ingestion: ``rows_done`` of ``rows`` committed."""

    view: str
    rows: Count
    rows_done: Count


# --- expectations ---------------------------------------------------------------------------


class Expectation(msgspec.Struct, frozen=True, kw_only=True):
    """What one feature's pushed values are expected to be (every field optional).

    ``min`` / ``max`` bound numbers (a ``float_vector``: each element); ``categories`` lists the
    allowed values as text (a string as it is, an integral number as ``"3"``, a bool as
    ``"true"``/``"false"``); ``max_null_share`` bounds the share of a push's rows where the
    feature is missing; ``dtype`` ``"int"`` on a ``float`` feature expects integral values
    (otherwise it must be the feature's own dtype).
    """

    feature: str
    dtype: FeatureDType | None = None
    min: Finite | None = None
    max: Finite | None = None
    categories: list[str] | None = None
    max_null_share: Share | None = None


class PutExpectations(msgspec.Struct, frozen=True, kw_only=True):
    """Set a view's expectations, replacing any earlier ones (an empty list removes them).

    ``on_violation``: ``reject`` refuses a push that breaks one (``InvalidInput`` naming the
    row and feature), ``warn`` writes it and answers the violations. ``fitted_from`` records
    where fitted expectations came from (for example the model version whose training profile
    monitoring fitted them on); it is kept for the reader and changes nothing.
    """

    view: str
    expectations: list[Expectation] = []
    on_violation: Literal["reject", "warn"] = "reject"
    fitted_from: str | None = None


class GetExpectations(msgspec.Struct, frozen=True, kw_only=True):
    """A view's expectations."""

    view: str


class FeatureExpectations(msgspec.Struct, frozen=True, kw_only=True):
    """A view's expectations as set, with ``violations``: those warned pushes let through
    since they were set."""

    view: str
    expectations: list[Expectation] = []
    on_violation: Literal["reject", "warn"] = "reject"
    fitted_from: str | None = None
    violations: RowCount = 0
    updated_at: datetime | None = None


# --- materialization ------------------------------------------------------------------------

MaterializationStatus = Literal["queued", "running", "succeeded", "failed"]


class Materialize(msgspec.Struct, frozen=True, kw_only=True):
    """Load a view's source rows with ``start < event_timestamp <= end`` into the stores.

    ``start`` defaults to the view's watermark (the end of its last complete run; none: from the
    first row), ``end`` to now. Rows go offline as they are, online only where newer than what
    is there, ``chunk_rows`` at a time, each chunk in one transaction. Re-running adds nothing.
    """

    view: str
    start: datetime | None = None
    end: datetime | None = None
    chunk_rows: PositiveCount = 10_000


class GetMaterialization(msgspec.Struct, frozen=True, kw_only=True):
    """A materialization run by id."""

    id: str


class Materialization(msgspec.Struct, frozen=True, kw_only=True):
    """A materialization run and its progress.

    ``rows_done`` source rows are read and handled of about ``rows_total`` (``None`` until
    counted); ``percent`` and ``rows_per_s`` follow from them. ``rows_written`` of them were in
    the run's window and written (a file is read whole; a database only inside the window). A
    failed run says why in ``error`` (the file, row range and column of a bad value).
    ``watermark`` is the view's watermark once the run succeeded.
    """

    id: str
    view: str
    status: MaterializationStatus
    start: datetime | None = None
    end: datetime | None = None
    rows_total: Count | None = None
    rows_done: Count = 0
    rows_written: Count = 0
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    rows_per_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    error: str | None = None
    watermark: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


# --- reads ----------------------------------------------------------------------------------


class GetOnlineFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """Latest values for entities (Feast's ``get-online-features``).

    ``features`` are ``view:feature`` references; or name a ``service`` to read its features.
    ``entities`` maps each join key to one value per entity row.
    """

    features: list[str] = []
    service: str | None = None
    entities: dict[str, list[Value]]


class OnlineMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """The column names of :class:`OnlineFeatures`: join keys first, then features as asked."""

    feature_names: list[str]


class FeatureColumn(msgspec.Struct, frozen=True, kw_only=True):
    """One column: a value, status and event timestamp per entity row."""

    values: list[Value]
    statuses: list[ValueStatus]
    event_timestamps: list[datetime | None]


class OnlineFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """Column-oriented like Feast's feature server: ``results[i]`` is ``feature_names[i]``."""

    metadata: OnlineMetadata
    results: list[FeatureColumn]


class GetHistoricalFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """Point-in-time correct features for ``entity_rows`` (join keys + ``event_timestamp``).

    For each row, each feature is the latest value at or before the row's timestamp and within
    the view's TTL, else ``None``: never a value from the future. Instead of ``entity_rows``,
    ``entity_source`` reads them from a source (its ``format`` and ``path``, or ``database``
    and ``table`` or ``query``; every column, ``event_timestamp`` naming the time column), under
    the same rules as a view's source; times come back as ISO 8601 text.

    ``output`` (since contract 1.4; :meth:`FeaturesService.get_historical` only) writes the rows
    to a Parquet file instead of answering them: a path ending in ``.parquet`` under the source
    roots (relative to the first) or an ``s3://`` URL under an ``s3://`` root. Its columns are
    the entity rows' (``event_timestamp`` as a UTC timestamp) then the features (typed as their
    views declare them). The file appears whole or not at all; an existing file is replaced
    only when it is such an output itself (else ``Conflict``).
    """

    features: list[str] = []
    service: str | None = None
    entity_rows: list[dict[str, Value]] = []
    chunk_rows: PositiveCount = 10_000
    entity_source: FeatureSource | None = None
    output: str | None = None


class HistoricalFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """Entity rows in request order, each extended with ``view:feature`` values.

    For a request with an ``output`` (since contract 1.4), ``rows`` is empty, ``output`` is
    where the file was written (an absolute path on the features module's host, or the
    ``s3://`` URL) and ``rows_written`` how many rows it holds.
    """

    rows: list[dict[str, Value]]
    output: str | None = None
    rows_written: RowCount | None = None

    def to_pandas(self) -> Any:
        """The rows as a pandas ``DataFrame``, one column per key, in request order.

        pandas is optional: it is imported here, on first use, and never by the contracts
        themselves; without it this raises ``ImportError`` saying how to install it. An answer
        written to an ``output`` carries no rows: read its file (``pandas.read_parquet``), or
        ask ``app.connect()``'s ``q.features.historical_frame`` for the frame.
        """
        if self.output is not None:
            raise ValueError(
                f"the rows were written to {self.output}: read that file (pandas.read_parquet)"
            )
        try:
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise ImportError(
                "HistoricalFeatures.to_pandas() needs pandas: pip install pandas"
                " (or use .rows, a list of dicts)"
            ) from None
        return pandas.DataFrame.from_records(self.rows)


class HistoricalChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk of a streamed historical retrieval; ``offset`` is its first entity row's index."""

    offset: Count
    rows: list[dict[str, Value]]


class FeaturesService(Protocol):
    """Feature views and services, online and offline stores, and transform states."""

    @method(scope=Scope.ADMIN, idempotent=True)
    async def put_view(self, request: PutFeatureView) -> FeatureView:
        """Create or version a view; ``InvalidInput`` for bad names, dtypes or defaults."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_view(self, request: GetFeatureView) -> FeatureView:
        """A view (latest or given version); ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_views(self, request: ListFeatureViews) -> Page[FeatureView]:
        """One page of views ordered by name."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def put_service(self, request: PutFeatureService) -> FeatureService:
        """Create or version a feature service; its features and transforms must resolve."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_service(self, request: GetFeatureService) -> FeatureService:
        """A feature service; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_services(self, request: ListFeatureServices) -> Page[FeatureService]:
        """One page of feature services ordered by name."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def put_expectations(self, request: PutExpectations) -> FeatureExpectations:
        """Set a view's expectations; ``InvalidInput`` for a feature the view does not have or
        bounds that cannot hold, ``NotFound`` for an unknown view."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_expectations(self, request: GetExpectations) -> FeatureExpectations:
        """A view's expectations (none set: an empty list); ``NotFound`` for an unknown view."""
        ...

    @method(scope=Scope.INGEST, idempotent=True)
    async def push(self, request: PushRows) -> PushResult:
        """Validate and write a batch of rows atomically."""
        ...

    @method(scope=Scope.INGEST, idempotent=True, streaming=True)
    def ingest(self, request: StreamRows) -> AsyncIterator[IngestProgress]:
        """Write many rows a chunk at a time, answering progress after each committed chunk."""
        ...

    @method(scope=Scope.INGEST, idempotent=False)
    async def materialize(self, request: Materialize) -> Materialization:
        """Queue a run loading the view's source into the stores; ``InvalidInput`` for a view
        without a source or a bad window. Poll :meth:`get_materialization` for its progress."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_materialization(self, request: GetMaterialization) -> Materialization:
        """A materialization run; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_online(self, request: GetOnlineFeatures) -> OnlineFeatures:
        """Latest values with statuses (TTL checked at read time)."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_historical(self, request: GetHistoricalFeatures) -> HistoricalFeatures:
        """Point-in-time correct rows, in request order."""
        ...

    @method(scope=Scope.READ, idempotent=True, streaming=True)
    def stream_historical(self, request: GetHistoricalFeatures) -> AsyncIterator[HistoricalChunk]:
        """The same rows as :meth:`get_historical`, streamed ``chunk_rows`` at a time."""
        ...

    @method(scope=Scope.TRAIN, idempotent=False)
    async def fit_transforms(self, request: FitTransforms) -> TransformState:
        """Fit a service's transforms on a training split; answers a new transform state."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_transform_state(self, request: GetTransformState) -> TransformState:
        """A transform state; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def transform_rows(self, request: TransformRows) -> FeatureVectors:
        """Model inputs for raw rows under a transform state (the offline path)."""
        ...

    @method(scope=Scope.PREDICT, idempotent=True)
    async def get_online_vectors(self, request: GetOnlineVectors) -> FeatureVectors:
        """Model inputs for entities from the online store (the serving path)."""
        ...
