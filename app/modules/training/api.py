"""The training module's public routes under ``/v1/training``.

- ``POST /jobs`` with the job spec (:class:`contracts.training.TrainingJobSpec` as JSON) -> 202
- ``GET /jobs`` (``?limit=&cursor=&status=``), ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel``
- ``GET /jobs/{id}/logs`` (``?limit=``: the newest lines, oldest first)
- ``GET /trainers``
- ``PUT|GET /policies/{model}`` (retraining policy), ``POST /retrain/{model}``,
  ``GET /retrainings[/{id}]``
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post, put
from litestar.openapi.spec import OpenAPIType
from litestar.params import FromQuery, PathParameter, QueryParameter

from app.kernel.http.bodies import contract_scope, decode_body, from_params, json_response
from app.kernel.http.openapi import NoBody, documented
from app.kernel.http.params import PageCursor, PageLimit
from contracts.common import NAME_PATTERN, InvalidInput, Page, Seconds
from contracts.inference import RolloutPolicy
from contracts.training import (
    MAX_LOG_LINES,
    CancelTrainingJob,
    GetJobLogs,
    GetRetraining,
    GetRetrainingPolicy,
    GetTrainingJob,
    JobLogs,
    ListRetrainings,
    ListTrainers,
    ListTrainingJobs,
    PutRetrainingPolicy,
    Retrain,
    Retraining,
    RetrainingPolicy,
    SubmitTrainingJob,
    TrainerList,
    TrainingJob,
    TrainingJobSpec,
    TrainingService,
)

__all__ = ["routes"]

_SPEC = msgspec.json.Decoder(TrainingJobSpec)
_POLICY = msgspec.json.Decoder(dict[str, Any])
_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

StatusQuery = Annotated[
    str | None,
    QueryParameter(
        description="Only jobs in this status.",
        schema_extra={"one_of": None, "type": OpenAPIType.STRING, "enum": list(_STATUSES)},
    ),
]

ModelName = Annotated[
    str, PathParameter(description="The model's name.", schema_extra={"pattern": NAME_PATTERN})
]
Id = Annotated[str, PathParameter(description="The identifier it was given at creation.")]
LogLimit = Annotated[
    int,
    QueryParameter(
        description="How many of the newest lines.",
        schema_extra={"minimum": 1, "maximum": MAX_LOG_LINES},
    ),
]

JOB_EXAMPLE = {
    "trainer": "mlp_regressor",
    "model": "lin",
    "dataset": {
        "rows": [{"a": 1.0, "b": 2.0, "y": 2.5}, {"a": 2.0, "b": 0.0, "y": 5.0}],
        "features": ["a", "b"],
        "label": "y",
    },
    "hyperparameters": {"epochs": 5},
}


class PolicyBody(msgspec.Struct, frozen=True, kw_only=True):
    """``PUT /v1/training/policies/{model}``: a :class:`RetrainingPolicy` without its model, which
    the path names (every field optional)."""

    on_drift: bool = True
    interval_s: Seconds = 0.0
    deployment: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)] | None = None
    rollout: RolloutPolicy = RolloutPolicy()
    enabled: bool = True


def routes(service: TrainingService) -> list[Any]:
    """Public routes of the training module, calling ``service`` (local or remote)."""

    @post(
        "/jobs",
        opt=contract_scope(TrainingService.submit_job),
        status_code=202,
        **documented(
            body=TrainingJobSpec, answer=TrainingJob, status=202, body_example=JOB_EXAMPLE
        ),
    )
    async def submit(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Queue a training job; answers the job (poll ``GET /jobs/{id}``)."""
        example = '{"trainer": ..., "model": ..., "dataset": {...}}'
        spec = decode_body(_SPEC, await request.body(), what="job spec", example=example)
        job = await service.submit_job(SubmitTrainingJob(spec=spec))
        return json_response(job, 202)

    @get(
        "/jobs",
        opt=contract_scope(TrainingService.list_jobs),
        **documented(answer=Page[TrainingJob]),
    )
    async def list_jobs(
        limit: PageLimit = 50,
        cursor: PageCursor = None,
        status: StatusQuery = None,
    ) -> Response[bytes]:
        """One page of jobs, newest first."""
        if status is not None and status not in _STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(_STATUSES)}")
        request = from_params(ListTrainingJobs, limit=limit, cursor=cursor, status=status)
        return json_response(await service.list_jobs(request))

    @get(
        "/jobs/{job_id:str}",
        opt=contract_scope(TrainingService.get_job),
        **documented(answer=TrainingJob),
    )
    async def get_job(job_id: Id) -> Response[bytes]:
        """A job: status, epoch, metrics, heartbeat, outcome."""
        return json_response(await service.get_job(GetTrainingJob(id=job_id)))

    @get(
        "/jobs/{job_id:str}/logs",
        opt=contract_scope(TrainingService.get_job_logs),
        **documented(answer=JobLogs),
    )
    async def get_job_logs(job_id: Id, limit: LogLimit = MAX_LOG_LINES) -> Response[bytes]:
        """The job's latest log lines, oldest first: its run's steps and what its training
        process printed."""
        request = from_params(GetJobLogs, id=job_id, limit=limit)
        return json_response(await service.get_job_logs(request))

    @post(
        "/jobs/{job_id:str}/cancel",
        opt=contract_scope(TrainingService.cancel_job),
        status_code=200,
        **documented(body=NoBody, answer=TrainingJob, body_required=False),
    )
    async def cancel(job_id: Id) -> Response[bytes]:
        """Cancel a job (at once when queued; at its next check when running)."""
        return json_response(await service.cancel_job(CancelTrainingJob(id=job_id)))

    @get(
        "/trainers",
        opt=contract_scope(TrainingService.list_trainers),
        **documented(answer=TrainerList),
    )
    async def trainers() -> Response[bytes]:
        """The trainers jobs may name, with their hyperparameters."""
        return json_response(await service.list_trainers(ListTrainers()))

    handlers = [
        submit,
        list_jobs,
        get_job,
        get_job_logs,
        cancel,
        trainers,
        *_retraining_handlers(service),
    ]
    return [Router(path="/v1/training", route_handlers=handlers, tags=["training"])]


def _retraining_handlers(service: TrainingService) -> list[Any]:
    @put(
        "/policies/{model:str}",
        opt=contract_scope(TrainingService.put_retraining_policy),
        status_code=200,
        **documented(body=PolicyBody, answer=RetrainingPolicy, body_required=False),
    )
    async def put_policy(model: ModelName, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Create or replace the model's retraining policy (the model comes from the path)."""
        example = '{"on_drift": true, "rollout": {...}}'
        body = decode_body(_POLICY, await request.body() or b"{}", what="policy", example=example)
        try:
            policy = msgspec.convert({**body, "model": model}, RetrainingPolicy)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid retraining policy: {exc}") from None
        return json_response(
            await service.put_retraining_policy(PutRetrainingPolicy(policy=policy))
        )

    @get(
        "/policies/{model:str}",
        opt=contract_scope(TrainingService.get_retraining_policy),
        **documented(answer=RetrainingPolicy),
    )
    async def get_policy(model: ModelName) -> Response[bytes]:
        """The model's retraining policy."""
        return json_response(await service.get_retraining_policy(GetRetrainingPolicy(model=model)))

    @post(
        "/retrain/{model:str}",
        opt=contract_scope(TrainingService.retrain),
        status_code=202,
        **documented(body=NoBody, answer=Retraining, status=202, body_required=False),
    )
    async def retrain(model: ModelName) -> Response[bytes]:
        """Retrain the model now from its last job's spec; answers the retraining."""
        return json_response(await service.retrain(Retrain(model=model)), 202)

    @get(
        "/retrainings",
        opt=contract_scope(TrainingService.list_retrainings),
        **documented(answer=Page[Retraining]),
    )
    async def list_retrainings(
        model: FromQuery[str | None] = None,
        limit: PageLimit = 50,
        cursor: PageCursor = None,
    ) -> Response[bytes]:
        """One page of retrainings, newest first."""
        request = from_params(ListRetrainings, model=model, limit=limit, cursor=cursor)
        return json_response(await service.list_retrainings(request))

    @get(
        "/retrainings/{saga_id:str}",
        opt=contract_scope(TrainingService.get_retraining),
        **documented(answer=Retraining),
    )
    async def get_retraining(saga_id: Id) -> Response[bytes]:
        """A retraining: its trigger, status, job, version, rollout and log."""
        return json_response(await service.get_retraining(GetRetraining(id=saga_id)))

    return [put_policy, get_policy, retrain, list_retrainings, get_retraining]
