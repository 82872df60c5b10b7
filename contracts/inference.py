"""The inference contract: predictions from registered ONNX models and their serving state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal, Protocol

import msgspec

from contracts.common import (
    Count,
    Finite,
    Limit,
    Page,
    Percent,
    PositiveCount,
    Scope,
    Seconds,
    Tensor,
    Version,
    method,
)
from contracts.features import FeatureSource, Value
from contracts.registry import TensorSpec

__all__ = [
    "VERSION",
    "AbortRollout",
    "BatchJob",
    "BatchOutput",
    "BatchResultChunk",
    "BatchSource",
    "DeleteDeployment",
    "Deployment",
    "Fallback",
    "FetchBatchResults",
    "GetBatchJob",
    "GetDeployment",
    "GetModelStatus",
    "GetRollout",
    "InferenceService",
    "ListDeployments",
    "ListRollouts",
    "LoadModel",
    "ModelStatus",
    "Predict",
    "Prediction",
    "PredictionRecord",
    "PromoteRollout",
    "PutDeployment",
    "Rollout",
    "RolloutChanged",
    "RolloutPolicy",
    "RolloutStep",
    "Route",
    "StartRollout",
    "SubmitBatchJob",
    "UnloadModel",
]

VERSION = (1, 8)
"""Contract version ``(major, minor)``; remote calls refuse a different major.

1.3: numeric fields carry their bounds (versions, limits, chunk sizes, durations, percents).
1.4: ``Rollout.follows``: the alias a deployment followed when its rollout started.
1.5: ``Prediction.labels`` and ``ModelStatus.classes`` for versions with class labels.
1.6: ``RolloutPolicy.judge_estimated``.
1.7: ``Predict.sticky``: the request headers a deployment's ``sticky_header`` reads.
1.8: batch jobs read their rows from files or tables (``SubmitBatchJob.source``) and write their
     results to a Parquet file (``SubmitBatchJob.output``, ``BatchJob.output``).
"""


class Predict(msgspec.Struct, frozen=True, kw_only=True):
    """Run a model on a batch of rows.

    ``model`` is a model reference (``name:N``, ``name@alias`` or a bare name); ``inputs`` maps
    each input name of the model's signature to a tensor whose first dimension is the batch.
    Unknown inputs are dropped; ``outputs`` (empty = all) selects what comes back. Inputs must
    match the signature's dtypes or cast to them safely; ``coerce=True`` (inputs that came from a
    text format such as JSON, which has no float32) converts numbers to the signature's dtype
    whenever every value is representable there.

    **By entity**: instead of ``inputs``, give ``entities`` (join key -> one value per row); the
    model version's feature service and transform state (its lineage) build the input from the
    online store, ``features`` (``view:feature`` -> one value per row, ``None`` = fetch it)
    overriding fetched values.
    """

    model: str
    inputs: dict[str, Tensor] = {}
    outputs: list[str] = []
    coerce: bool = False
    sticky_key: str | None = None
    """For a deployment with stickiness: the key (e.g. a request header) that picks the route."""
    entities: dict[str, list[Value]] = {}
    features: dict[str, list[Value]] = {}
    sticky: dict[str, str] = {}
    """The caller's request headers (lower-case names), from which a deployment with a
    ``sticky_header`` takes its key when ``sticky_key`` is not given; the HTTP route passes
    them, so it need not look the deployment up first (since contract 1.7). Credentials
    (``authorization``, ``proxy-authorization``, ``cookie``, ``x-api-key``) travel as their
    SHA-256 digest, never as they are."""


class Prediction(msgspec.Struct, frozen=True, kw_only=True):
    """The outputs of one prediction and which model version produced them.

    ``deployment`` names the deployment that routed the request; ``fallback`` describes the
    fallback that answered when the primary failed (``model:<ref>`` or ``default``, whose answer
    has version 0); ``cached`` marks an answer from the deployment's response cache.
    """

    model: str
    version: Count
    outputs: dict[str, Tensor]
    prediction_id: str
    fallback: str | None = None
    cached: bool = False
    deployment: str | None = None
    labels: list[str] = []
    """For a version with classes: the predicted class of each row (the most probable one in
    the probability output), as text; empty otherwise."""


class PredictionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What monitoring receives for every prediction, success or error (never sampled).

    ``status`` is ``ok`` or the error's code; ``version`` is ``None`` when the failure came
    before a version was resolved; ``latency_s`` is the wall time in seconds; ``outputs`` is
    empty for an error; ``inputs`` is attached for a sample of predictions only.
    """

    prediction_id: str
    model: str
    version: Version | None
    status: str
    latency_s: Seconds
    at: datetime
    outputs: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] | None = None
    deployment: str | None = None


class LoadModel(msgspec.Struct, frozen=True, kw_only=True):
    """Load and warm the version a reference resolves to (``wait=False`` answers at once)."""

    model: str
    wait: bool = True


class GetModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The serving state of the version a reference resolves to."""

    model: str


class UnloadModel(msgspec.Struct, frozen=True, kw_only=True):
    """Drop a loaded version's session (in-flight requests finish first)."""

    model: str


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where a model version stands in this process."""

    model: str
    version: Version
    state: Literal["unloaded", "loading", "ready", "failed"]
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    providers: list[str] = []
    error: str | None = None
    """Why the last load failed (``state`` ``failed``): predictions answer 503
    ``model_load_failed`` with this reason."""
    retry_at: datetime | None = None
    """When a failed load is tried again on the next use; an explicit load tries at once."""
    classes: list[str] = []
    """The version's class labels (ready versions), in the probability output's order."""


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """One weighted route of a deployment: a model version (``name:N``) and its share."""

    model: str
    weight: Finite


class Fallback(msgspec.Struct, frozen=True, kw_only=True):
    """What answers when the primary route fails or misses its deadline.

    ``kind="model"`` runs ``model`` (any reference); ``kind="default"`` answers ``outputs``.
    """

    kind: Literal["model", "default"]
    model: str | None = None
    outputs: dict[str, Tensor] = {}


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """Weighted routes over model versions, addressed by a bare name like a model.

    A sticky key (the request header ``sticky_header`` or the first row of input
    ``sticky_input``) always picks the same route; ``shadows`` get a copy of the traffic whose
    results are recorded, never returned; ``fallbacks`` are tried in order when the primary
    fails; ``cache_ttl_s > 0`` enables a bounded response cache keyed by version and input.
    """

    name: str
    routes: list[Route]
    sticky_header: str | None = None
    sticky_input: str | None = None
    shadows: list[str] = []
    fallbacks: list[Fallback] = []
    cache_ttl_s: Seconds = 0
    cache_max_entries: PositiveCount = 1000
    updated_at: datetime | None = None


class PutDeployment(msgspec.Struct, frozen=True, kw_only=True):
    """Create or replace a deployment."""

    deployment: Deployment


class GetDeployment(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment by name."""

    name: str


class ListDeployments(msgspec.Struct, frozen=True, kw_only=True):
    """One page of deployments, by name."""

    limit: Limit = 50
    cursor: str | None = None


class DeleteDeployment(msgspec.Struct, frozen=True, kw_only=True):
    """Delete a deployment (its name then resolves as a model name again)."""

    name: str


class BatchSource(msgspec.Struct, frozen=True, kw_only=True):
    """A batch job's rows, read from a file or a table where they live (since contract 1.8).

    ``source`` says where, as a feature view's source does: a Parquet or CSV file or directory
    under the source roots (``QUARRY_SOURCE_ROOTS``), or a table or query of a configured
    database (``QUARRY_SOURCE_DATABASES``); its timestamps, ``columns`` and schedule are not
    used. The model's input comes from one of:

    - ``inputs``: each model input -> the columns stacked, in order, into its tensor
      (``[rows, len(columns)]``; numbers or booleans, converted to the input's dtype when every
      value fits, as ``coerce`` does; or text columns for a ``BYTES`` input);
    - ``entities``: join keys read from the columns of their names (or ``source.entities[key]``);
      the model's feature service builds its input, as predicting by entity does.

    ``keys`` are columns written next to the predictions in an ``output`` file. Files are read in
    path order, a table or query in the order of its ``keys`` (which it needs): a resumed job
    reads the same rows in the same order.
    """

    source: FeatureSource
    inputs: dict[str, list[str]] = {}
    entities: list[str] = []
    keys: list[str] = []


class BatchOutput(msgspec.Struct, frozen=True, kw_only=True):
    """Where a batch job writes its results: a Parquet file under the source roots.

    The file has the source's ``keys`` columns (or ``row``, the row's number in the input), then
    one column per output of one value per row (``name``) or per position of a row's vector
    (``name_0``, ``name_1``, ...), then ``label`` for a version with class labels. Each chunk is
    written to a part file as it is scored; the parts become the file in one rename when the job
    succeeds, so the file is never seen half written and a resumed job never repeats a row.
    An existing file is replaced only with ``overwrite``, and only when it is an earlier batch
    job's output (its Parquet metadata says so): a source under the roots is never overwritten.
    """

    path: str
    overwrite: bool = False


class SubmitBatchJob(msgspec.Struct, frozen=True, kw_only=True):
    """Run a model on many rows in the background, ``chunk_rows`` rows at a time.

    ``model`` is resolved at submission (an unknown model is ``NotFound`` then) and pinned to
    that version unless it names a deployment; ``coerce`` is as in :class:`Predict`.

    The rows are ``inputs`` (tensors), or, since contract 1.8, read from ``source`` (``inputs``
    then empty); the results are fetched with :meth:`InferenceService.fetch_batch_results`, or
    written to ``output``.
    """

    model: str
    inputs: dict[str, Tensor]
    chunk_rows: PositiveCount = 1024
    coerce: bool = False
    source: BatchSource | None = None
    output: BatchOutput | None = None


class GetBatchJob(msgspec.Struct, frozen=True, kw_only=True):
    """A batch job by id."""

    id: str


class BatchJob(msgspec.Struct, frozen=True, kw_only=True):
    """A batch prediction job: ``rows_done`` of ``rows`` have results so far.

    ``failed`` jobs carry the reason in ``error`` (for example inputs the model refuses);
    ``version`` is the model version that produced the results.
    """

    id: str
    model: str
    status: Literal["queued", "running", "succeeded", "failed"]
    rows: Count
    rows_done: Count
    error: str | None = None
    version: Version | None = None
    created_at: datetime
    updated_at: datetime
    output: str | None = None
    """The Parquet file the job writes its results to (since contract 1.8)."""


class FetchBatchResults(msgspec.Struct, frozen=True, kw_only=True):
    """The results of a succeeded batch job, one chunk at a time."""

    id: str


class BatchResultChunk(msgspec.Struct, frozen=True, kw_only=True):
    """Outputs for rows ``offset`` to ``offset + len`` of a batch job's inputs."""

    offset: Count
    outputs: dict[str, Tensor]


class RolloutPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a rollout moves traffic and judges the candidate against the baseline.

    Traffic goes to the candidate in ``steps`` (percent, ascending, ending at 100), one step
    per ``interval_s``. Before each advance, over the step's traffic: a candidate with fewer
    than ``min_requests`` requests holds; an error rate above the baseline's by more than
    ``max_error_rate_increase``, or a p99 latency above ``max_latency_ratio`` times the
    baseline's plus ``latency_slack_s``, rolls back; where both have at least ``min_feedback``
    fed-back outcomes, a realised ``quality_metric`` worse than the baseline's by more than
    ``max_quality_drop`` rolls back. With ``judge_estimated`` (since contract 1.6), where too
    little feedback arrived, the ``quality_metric`` monitoring estimates from a classifier's
    probabilities without labels (CBPE, which assumes calibrated probabilities: a less confident
    candidate estimates lower) is judged the same way. Reaching 100 promotes: the deployment
    routes only to the candidate and ``promote_alias`` (if set) moves to it.
    """

    steps: list[Percent] = msgspec.field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])
    interval_s: Seconds = 60.0
    min_requests: Count = 20
    max_error_rate_increase: Finite = 0.02
    max_latency_ratio: Finite = 1.5
    latency_slack_s: Seconds = 0.005
    quality_metric: str = "accuracy"
    max_quality_drop: Finite = 0.02
    min_feedback: Count = 20
    promote_alias: str | None = "champion"
    judge_estimated: bool = False


class StartRollout(msgspec.Struct, frozen=True, kw_only=True):
    """Roll ``candidate`` (any model reference, pinned to ``name:N``) out on ``deployment``.

    ``baseline`` defaults to the deployment's only route, or, when there is no deployment of
    that name yet, to the candidate model's ``champion`` (the deployment is then created).
    """

    deployment: str
    candidate: str
    baseline: str | None = None
    policy: RolloutPolicy = RolloutPolicy()


class RolloutStep(msgspec.Struct, frozen=True, kw_only=True):
    """One decision of a rollout, with the figures it was based on."""

    at: datetime
    action: Literal["start", "advance", "hold", "rollback", "promote", "abort"]
    percent: Percent
    reason: str
    figures: dict[str, float] = {}


class Rollout(msgspec.Struct, frozen=True, kw_only=True):
    """A progressive rollout: ``percent`` of the deployment's traffic goes to ``candidate``."""

    id: str
    deployment: str
    baseline: str
    candidate: str
    policy: RolloutPolicy
    status: Literal["running", "promoted", "rolled_back", "aborted"]
    percent: Percent
    step: Count
    history: list[RolloutStep] = []
    created_at: datetime
    updated_at: datetime
    next_check_at: datetime | None = None
    follows: str | None = None
    """The alias reference (``name@alias``) the deployment followed when the rollout started,
    or ``None`` when it was pinned to a version. A rollout started from an alias ends with the
    deployment following an alias again: the promoted alias (``policy.promote_alias``) when it
    is promoted with one, this one when it is rolled back or aborted."""


class GetRollout(msgspec.Struct, frozen=True, kw_only=True):
    """A rollout by id."""

    id: str


class ListRollouts(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a deployment's rollouts (all deployments when ``None``), newest first."""

    deployment: str | None = None
    limit: Limit = 50
    cursor: str | None = None


class PromoteRollout(msgspec.Struct, frozen=True, kw_only=True):
    """Finish a running rollout now: all traffic to the candidate."""

    id: str
    reason: str = "promoted by hand"


class AbortRollout(msgspec.Struct, frozen=True, kw_only=True):
    """Stop a running rollout now: all traffic back to the baseline."""

    id: str
    reason: str = "aborted by hand"


class RolloutChanged(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A rollout started, moved, held, or ended (``status`` and the step's ``action``)."""

    id: str
    deployment: str
    candidate: str
    baseline: str
    status: Literal["running", "promoted", "rolled_back", "aborted"]
    action: str
    percent: Percent
    reason: str


class InferenceService(Protocol):
    """Model serving on ONNX Runtime with adaptive batching."""

    @method(scope=Scope.PREDICT)
    async def predict(self, request: Predict) -> Prediction:
        """Run the model; signature violations are ``UnprocessableInput`` naming the input."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def load_model(self, request: LoadModel) -> ModelStatus:
        """Load (fetching and verifying the artifact) and warm a version; answers its status."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def model_status(self, request: GetModelStatus) -> ModelStatus:
        """The state of a version without loading it."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def unload_model(self, request: UnloadModel) -> ModelStatus:
        """Unload a version; answers its status afterwards."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def put_deployment(self, request: PutDeployment) -> Deployment:
        """Create or replace a deployment; its routes must resolve in the registry."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_deployment(self, request: GetDeployment) -> Deployment:
        """A deployment; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_deployments(self, request: ListDeployments) -> Page[Deployment]:
        """One page of deployments ordered by name."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def delete_deployment(self, request: DeleteDeployment) -> Deployment:
        """Delete a deployment; answers what was deleted (``NotFound`` if there was none)."""
        ...

    @method(scope=Scope.PREDICT)
    async def submit_batch_job(self, request: SubmitBatchJob) -> BatchJob:
        """Queue a batch job; ``NotFound`` for an unknown model, ``InvalidInput`` for ragged
        inputs, a bad ``chunk_rows``, or a source or output that may not or cannot be read or
        written (naming the path and column); ``Conflict`` for an existing output file without
        ``overwrite``. Poll :meth:`get_batch_job` for its progress."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_batch_job(self, request: GetBatchJob) -> BatchJob:
        """A batch job's status and progress; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.ADMIN)
    async def start_rollout(self, request: StartRollout) -> Rollout:
        """Start moving a deployment's traffic to a candidate; ``Conflict`` while another
        rollout of the deployment runs."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_rollout(self, request: GetRollout) -> Rollout:
        """A rollout; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_rollouts(self, request: ListRollouts) -> Page[Rollout]:
        """One page of rollouts, newest first."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def promote_rollout(self, request: PromoteRollout) -> Rollout:
        """Promote a running rollout now (a finished one is answered as it is)."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def abort_rollout(self, request: AbortRollout) -> Rollout:
        """Abort a running rollout now (a finished one is answered as it is)."""
        ...

    @method(scope=Scope.READ, idempotent=True, streaming=True)
    def fetch_batch_results(self, request: FetchBatchResults) -> AsyncIterator[BatchResultChunk]:
        """Stream a succeeded job's outputs in row order; ``Conflict`` while it is not, and for
        a job that wrote them to an output file."""
        ...
