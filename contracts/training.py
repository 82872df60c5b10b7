"""The training contract: offline batch training jobs that end as registered model versions.

A job reads its dataset (through the features contract, or inline rows), splits it, fits the
feature service's transforms on the training split, trains a torch model with a named trainer,
exports it to ONNX (checked against torch on held-out rows), evaluates it on the validation split,
applies a validation gate, and registers the version with its lineage and reference profile.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Protocol

import msgspec

from contracts.common import (
    Count,
    Finite,
    Limit,
    Page,
    PositiveCount,
    Scope,
    Seconds,
    Seed,
    TimeLimit,
    Version,
    method,
)
from contracts.features import FeatureSource, Value
from contracts.inference import RolloutPolicy

__all__ = [
    "MAX_HISTORY",
    "MAX_LOG_LINE",
    "MAX_LOG_LINES",
    "VERSION",
    "CancelTrainingJob",
    "Dataset",
    "EpochRecord",
    "Gate",
    "GateVerdict",
    "GetJobLogs",
    "GetRetraining",
    "GetRetrainingPolicy",
    "GetTrainingJob",
    "JobLogs",
    "ListRetrainings",
    "ListTrainers",
    "ListTrainingJobs",
    "LogLine",
    "PutRetrainingPolicy",
    "Retrain",
    "Retraining",
    "RetrainingPolicy",
    "Split",
    "SubmitTrainingJob",
    "TrainerInfo",
    "TrainerList",
    "TrainingJob",
    "TrainingJobFinished",
    "TrainingJobSpec",
    "TrainingService",
]

MAX_HISTORY = 1000
"""Epochs a job's ``history`` keeps (the latest ones)."""

MAX_LOG_LINES = 1000
"""Log lines a job keeps (the latest ones, of every attempt)."""
MAX_LOG_LINE = 2000
"""Characters a log line keeps (a longer one is cut, ending with ``…``)."""

VERSION = (1, 6)
"""Contract version ``(major, minor)``; remote calls refuse a different major.

1.2: numeric fields carry their bounds (seed, time limit, attempts, limits, versions).
1.4: a dataset's ``entity_source`` (entity rows read from a file or table).
1.5: a dataset's ``source`` (a plain table trained on directly, without a feature view).
1.6: a job's log lines (:meth:`TrainingService.get_job_logs`).
"""

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Dataset(msgspec.Struct, frozen=True, kw_only=True):
    """Where the rows come from and what the label is.

    From the feature store: ``feature_service`` (``name`` or ``name:N``) and ``entity_rows``
    (join keys + ``event_timestamp``); ``label`` is then a ``view:feature`` reference read
    point-in-time like the features, or a key of the entity rows. Inline: ``rows`` holding the
    service's ``view:feature`` keys (with ``feature_service``) or the plain columns named by
    ``features`` (without one), plus ``label``. Instead of ``entity_rows``, ``entity_source``
    reads them from a Parquet or CSV file or a PostgreSQL table or query, as the features
    module reads a view's source (:class:`contracts.features.FeatureSource`; every column, the
    label may be one of them).

    A plain table (since contract 1.5): ``source`` names a Parquet or CSV file or a PostgreSQL
    table or query (the same declaration, roots and databases as a view's source), ``features``
    its numeric input columns and ``label`` its label column; no feature service, no feature
    view. The source's column mappings (``entities``, ``columns``) are a view's: refused here.
    """

    label: str
    feature_service: str | None = None
    entity_rows: list[dict[str, Value]] = []
    rows: list[dict[str, Value]] = []
    features: list[str] = []
    entity_source: FeatureSource | None = None
    source: FeatureSource | None = None


class Split(msgspec.Struct, frozen=True, kw_only=True):
    """A seeded random split: ``validation`` is the share of rows held out (0 < v < 1)."""

    validation: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.2
    seed: Seed = 0


class Gate(msgspec.Struct, frozen=True, kw_only=True):
    """A validation gate with MLflow's threshold semantics, on one validation ``metric``.

    ``threshold``: the metric must be at least (at most, for a lower-is-better metric) this.
    With a ``baseline`` alias whose version exists, the candidate must also beat it on the same
    validation rows by ``min_absolute_change`` and ``min_relative_change`` (a share of the
    baseline's value) when they are set; no baseline version: thresholds only. Passing moves
    ``promote_to`` (if set) to the new version.
    """

    metric: str
    threshold: Finite | None = None
    min_absolute_change: Finite | None = None
    min_relative_change: Finite | None = None
    baseline: str | None = None
    promote_to: str | None = "candidate"


class TrainingJobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to train: ``trainer`` with ``hyperparameters`` on ``dataset``, registered as ``model``.

    ``device``: ``auto`` = CUDA when torch sees one, else CPU. ``max_attempts``: runs of a job
    whose worker died before it is failed; ``time_limit_s``: the longest one run may take.
    """

    trainer: str
    model: str
    dataset: Dataset
    hyperparameters: dict[str, Value] = {}
    split: Split = Split()
    gate: Gate | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_attempts: PositiveCount = 3
    time_limit_s: TimeLimit = 3600.0
    description: str = ""


class GateVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """The gate's outcome: the candidate's and (when there was one) the baseline's metric."""

    passed: bool
    metric: str
    value: float
    baseline_version: Version | None = None
    baseline_value: float | None = None
    reasons: list[str] = []


class EpochRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The metrics a trainer reported after one epoch (training and validation loss...)."""

    epoch: Count
    metrics: dict[str, float] = {}


class TrainingJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job's state: ``epoch`` of ``epochs`` and the current ``metrics`` while it runs;
    ``version`` registered, ``verdict`` and final metrics when it succeeded; ``error`` when it
    failed; ``attempt`` counts runs (a worker that died starts a new one).

    ``history`` holds the current attempt's per-epoch metrics (the latest
    :data:`MAX_HISTORY` epochs; since contract 1.3) on ``get_job``; job lists leave it empty.
    """

    id: str
    spec: TrainingJobSpec
    status: JobStatus
    attempt: Count = 0
    epoch: Count = 0
    epochs: Count = 0
    metrics: dict[str, float] = {}
    heartbeat_at: datetime | None = None
    error: str | None = None
    version: Version | None = None
    verdict: GateVerdict | None = None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    history: list[EpochRecord] = []


class SubmitTrainingJob(msgspec.Struct, frozen=True, kw_only=True):
    """Queue a job; what can be checked now (trainer, hyperparameters, dataset, gate) is."""

    spec: TrainingJobSpec


class GetTrainingJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job by id."""

    id: str


class ListTrainingJobs(msgspec.Struct, frozen=True, kw_only=True):
    """One page of jobs, newest first, optionally only those in ``status``."""

    limit: Limit = 50
    cursor: str | None = None
    status: JobStatus | None = None


class GetJobLogs(msgspec.Struct, frozen=True, kw_only=True):
    """The newest ``limit`` log lines of job ``id``."""

    id: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOG_LINES)] = MAX_LOG_LINES


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line a job's run logged (its own steps, and what its training process printed)."""

    at: datetime
    attempt: Count
    line: Annotated[str, msgspec.Meta(max_length=MAX_LOG_LINE)]


class JobLogs(msgspec.Struct, frozen=True, kw_only=True):
    """A job's log lines, oldest first; ``dropped`` older lines are no longer kept (a job keeps
    the latest :data:`MAX_LOG_LINES`, or the request asked for fewer)."""

    id: str
    lines: list[LogLine] = []
    dropped: Count = 0


class CancelTrainingJob(msgspec.Struct, frozen=True, kw_only=True):
    """Ask a job to stop: a queued job is cancelled at once, a running one at its next check."""

    id: str


class ListTrainers(msgspec.Struct, frozen=True, kw_only=True):
    """Every trainer this process knows (built-in and plug-ins)."""


class TrainerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A trainer: its task and hyperparameters (name -> type and default, as text)."""

    name: str
    task: Literal["classification", "regression"]
    description: str = ""
    hyperparameters: dict[str, str] = {}
    builtin: bool = False


class TrainerList(msgspec.Struct, frozen=True, kw_only=True):
    """The trainers, by name."""

    items: list[TrainerInfo]


class TrainingJobFinished(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A job ended: ``succeeded`` (with the version) or ``failed``/``cancelled`` (with why)."""

    id: str
    model: str
    status: JobStatus
    version: Version | None = None
    error: str | None = None
    gate_passed: bool | None = None


class RetrainingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When ``model`` is retrained, and how the result reaches traffic.

    Triggers: ``on_drift`` (monitoring's ``DriftDetected`` for the model), every ``interval_s``
    seconds (0 = no schedule), or on demand. A retraining submits the model's last successful
    job spec again with fresh data (entity rows re-stamped to now, so features are read as they
    are now) and, when its gate passes, starts a rollout of the new version on ``deployment``
    (default: ``<model>-live``; models and deployments share one namespace) with
    ``rollout``.

    ``job`` (since contract 1.4) names the trainer and dataset to retrain with instead: what a
    model never trained here (one uploaded) needs; its ``model`` must be the policy's.
    """

    model: str
    on_drift: bool = True
    interval_s: Seconds = 0.0
    deployment: str | None = None
    rollout: RolloutPolicy = RolloutPolicy()
    enabled: bool = True
    job: TrainingJobSpec | None = None


class PutRetrainingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Create or replace a model's retraining policy."""

    policy: RetrainingPolicy


class GetRetrainingPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A model's retraining policy."""

    model: str


class Retrain(msgspec.Struct, frozen=True, kw_only=True):
    """Retrain ``model`` now (its policy decides the rollout; without one, the defaults)."""

    model: str
    reason: str = "on demand"


class Retraining(msgspec.Struct, frozen=True, kw_only=True):
    """One retraining saga: train -> gate -> rollout, with compensation when a step fails.

    ``trigger`` identifies what started it (``drift:<report id>``, ``schedule:<time>``,
    ``manual:<id>``); one trigger starts one retraining. ``log`` lists what happened, in order.
    """

    id: str
    model: str
    trigger: str
    status: Literal["training", "rolling_out", "succeeded", "failed", "compensated"]
    job_id: str | None = None
    version: Version | None = None
    rollout_id: str | None = None
    error: str | None = None
    log: list[str] = []
    created_at: datetime
    updated_at: datetime


class GetRetraining(msgspec.Struct, frozen=True, kw_only=True):
    """A retraining by id."""

    id: str


class ListRetrainings(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a model's retrainings (all models when ``None``), newest first."""

    model: str | None = None
    limit: Limit = 50
    cursor: str | None = None


class TrainingService(Protocol):
    """Offline batch training on the task queue."""

    @method(scope=Scope.TRAIN)
    async def submit_job(self, request: SubmitTrainingJob) -> TrainingJob:
        """Validate and queue a job; ``InvalidInput`` for what is wrong with the spec."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_job(self, request: GetTrainingJob) -> TrainingJob:
        """A job; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_jobs(self, request: ListTrainingJobs) -> Page[TrainingJob]:
        """One page of jobs, newest first."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_job_logs(self, request: GetJobLogs) -> JobLogs:
        """A job's latest log lines; ``NotFound`` if there is no such job."""
        ...

    @method(scope=Scope.TRAIN, idempotent=True)
    async def cancel_job(self, request: CancelTrainingJob) -> TrainingJob:
        """Cancel a job (a finished one is answered as it is)."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_trainers(self, request: ListTrainers) -> TrainerList:
        """The trainers jobs may name."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def put_retraining_policy(self, request: PutRetrainingPolicy) -> RetrainingPolicy:
        """Create or replace a model's retraining policy."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_retraining_policy(self, request: GetRetrainingPolicy) -> RetrainingPolicy:
        """A model's retraining policy; ``NotFound`` if it has none."""
        ...

    @method(scope=Scope.TRAIN)
    async def retrain(self, request: Retrain) -> Retraining:
        """Start a retraining now; ``NotFound`` when the model was never trained by a job."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_retraining(self, request: GetRetraining) -> Retraining:
        """A retraining; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_retrainings(self, request: ListRetrainings) -> Page[Retraining]:
        """One page of retrainings, newest first."""
        ...
