"""The inference module's public routes: ``POST /v1/predict/{model_ref}``, model status,
deployments (``/v1/inference/deployments``), their progressive rollouts
(``/v1/inference/deployments/{name}/rollouts``, ``/v1/inference/rollouts/{id}[/promote|/abort]``)
and batch jobs (``/v1/inference/batch-jobs``).

Bodies are JSON (``{"inputs": {"x": [[...]]}, "outputs": [...]}``) or msgpack with the same shape
(``Content-Type: application/x-msgpack``); answers use the request's format. A deployment's
default fallback answer is given, and shown, as rows per output like prediction outputs.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
import numpy as np
from litestar import Request, Response, Router, delete, get, post, put
from litestar.params import FromPath, FromQuery

from app.kernel.http.bodies import contract_scope, decode_body, from_params, json_response
from app.kernel.settings import Settings
from app.modules.inference.oip import oip_routes
from contracts.common import (
    Conflict,
    InvalidInput,
    NotFound,
    PositiveCount,
    Scope,
    Seconds,
    Tensor,
)
from contracts.features import Value
from contracts.inference import (
    AbortRollout,
    BatchJob,
    DeleteDeployment,
    Deployment,
    Fallback,
    FetchBatchResults,
    GetBatchJob,
    GetDeployment,
    GetModelStatus,
    GetRollout,
    InferenceService,
    ListDeployments,
    ListRollouts,
    LoadModel,
    ModelStatus,
    Predict,
    Prediction,
    PromoteRollout,
    PutDeployment,
    Rollout,
    RolloutPolicy,
    Route,
    StartRollout,
    SubmitBatchJob,
)

__all__ = ["routes"]

MSGPACK = "application/x-msgpack"


class PredictBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/predict/{model_ref}``: rows per input (or entities), the outputs wanted.

    By entity: ``{"entities": {"user_id": [1, 2]}, "features": {"view:feature": [v, null]}}``.
    """

    inputs: dict[str, list[Any]] = {}
    outputs: list[str] = []
    entities: dict[str, list[Value]] = {}
    features: dict[str, list[Value]] = {}


class FallbackBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A fallback: another model (``kind="model"``) or a fixed answer, rows per output."""

    kind: Literal["model", "default"]
    model: str | None = None
    outputs: dict[str, list[Any]] = {}


class DeploymentBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/inference/deployments/{name}``: the deployment (its name is in the path)."""

    routes: list[Route]
    sticky_header: str | None = None
    sticky_input: str | None = None
    shadows: list[str] = []
    fallbacks: list[FallbackBody] = []
    cache_ttl_s: Seconds = 0
    cache_max_entries: PositiveCount = 1000


class BatchJobBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/inference/batch-jobs``: the model reference and rows per input."""

    model: str
    inputs: dict[str, list[Any]]
    chunk_rows: PositiveCount = 1024


class RolloutBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/inference/deployments/{name}/rollouts``: the candidate, optionally the baseline
    and the policy (each field of :class:`RolloutPolicy` defaults)."""

    candidate: str
    baseline: str | None = None
    policy: RolloutPolicy = RolloutPolicy()


class ReasonBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/inference/rollouts/{id}/promote`` or ``/abort``: an optional reason."""

    reason: str | None = None


STICKY_TTL_S = 5.0
"""How long the predict route trusts what it learnt of a deployment's sticky header."""

_DEPLOYMENT = msgspec.json.Decoder(DeploymentBody)
_BATCH_JOB = msgspec.json.Decoder(BatchJobBody)
_ROLLOUT = msgspec.json.Decoder(RolloutBody)
_REASON = msgspec.json.Decoder(ReasonBody)
_JSON = msgspec.json.Decoder(PredictBody)
_MSGPACK = msgspec.msgpack.Decoder(PredictBody)
_JSON_OUT = msgspec.json.Encoder()
_MSGPACK_OUT = msgspec.msgpack.Encoder()


def routes(service: InferenceService, settings: Settings) -> list[Any]:
    """Public routes of the inference module, calling ``service`` (local or remote)."""

    sticky_headers: dict[str, tuple[str | None, float]] = {}

    async def sticky_header(model_ref: str) -> str | None:
        if ":" in model_ref or "@" in model_ref:
            return None
        known = sticky_headers.get(model_ref)
        if known is not None and time.monotonic() - known[1] < STICKY_TTL_S:
            return known[0]
        try:
            deployment = await service.get_deployment(GetDeployment(name=model_ref))
            header = deployment.sticky_header
        except (NotFound, InvalidInput):
            header = None
        if len(sticky_headers) > 10_000:
            sticky_headers.clear()
        sticky_headers[model_ref] = (header, time.monotonic())
        return header

    @post("/v1/predict/{model_ref:str}", opt={"scope": Scope.PREDICT.value}, status_code=200)
    async def predict(model_ref: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        """Predict with the model (or deployment) a reference resolves to."""
        packed = request.headers.get("content-type", "").startswith(MSGPACK)
        body = _decode(await request.body(), packed)
        header = await sticky_header(model_ref)
        sticky = request.headers.get(header) if header else None
        prediction = await service.predict(
            Predict(
                model=model_ref,
                inputs=_tensors(body),
                outputs=body.outputs,
                coerce=True,
                sticky_key=sticky,
                entities=body.entities,
                features=body.features,
            )
        )
        answer = _answer(prediction)
        if packed:
            return Response(_MSGPACK_OUT.encode(answer), media_type=MSGPACK)
        return Response(_JSON_OUT.encode(answer), media_type="application/json")

    @get("/v1/inference/models/{model_ref:str}", opt={"scope": Scope.READ.value})
    async def status(model_ref: FromPath[str]) -> ModelStatus:
        """Whether the version a reference resolves to is loaded (without loading it)."""
        return await service.model_status(GetModelStatus(model=model_ref))

    @post("/v1/inference/models/{model_ref:str}/load", opt={"scope": Scope.READ.value})
    async def load(model_ref: FromPath[str]) -> ModelStatus:
        """Load and warm a version; answers once it is ready (or failed)."""
        return await service.load_model(LoadModel(model=model_ref))

    return [
        Router(path="/", route_handlers=[predict, status, load]),
        Router(
            path="/v1/inference/deployments",
            route_handlers=[*_deployment_handlers(service), *_rollout_start_handlers(service)],
        ),
        Router(path="/v1/inference/rollouts", route_handlers=_rollout_handlers(service)),
        Router(path="/v1/inference/batch-jobs", route_handlers=_batch_job_handlers(service)),
        *oip_routes(service, settings),
    ]


def _answer(prediction: Prediction) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "outputs": {k: t.to_numpy().tolist() for k, t in prediction.outputs.items()},
        "model": prediction.model,
        "version": prediction.version,
        "prediction_id": prediction.prediction_id,
    }
    if prediction.deployment is not None:
        answer["deployment"] = prediction.deployment
    if prediction.fallback is not None:
        answer["fallback"] = prediction.fallback
    if prediction.cached:
        answer["cached"] = True
    return answer


def _deployment_handlers(service: InferenceService) -> list[Any]:
    @get("/", opt=contract_scope(InferenceService.list_deployments))
    async def list_deployments(
        limit: FromQuery[int] = 50, cursor: FromQuery[str | None] = None
    ) -> Response[bytes]:
        """One page of deployments ordered by name: ``{"items": [...], "next_cursor": ...}``."""
        page = await service.list_deployments(
            from_params(ListDeployments, limit=limit, cursor=cursor)
        )
        items = [_deployment_json(d) for d in page.items]
        return json_response({"items": items, "next_cursor": page.next_cursor})

    @get("/{name:str}", opt=contract_scope(InferenceService.get_deployment))
    async def get_deployment(name: FromPath[str]) -> Response[bytes]:
        """A deployment by name."""
        return json_response(
            _deployment_json(await service.get_deployment(GetDeployment(name=name)))
        )

    @put("/{name:str}", opt=contract_scope(InferenceService.put_deployment), status_code=200)
    async def put_deployment(
        name: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """Create or replace a deployment; answers it as stored."""
        deployment = _deployment_body(name, await request.body())
        stored = await service.put_deployment(PutDeployment(deployment=deployment))
        return json_response(_deployment_json(stored))

    @delete("/{name:str}", opt=contract_scope(InferenceService.delete_deployment), status_code=200)
    async def delete_deployment(name: FromPath[str]) -> Response[bytes]:
        """Delete a deployment; answers what was deleted."""
        gone = await service.delete_deployment(DeleteDeployment(name=name))
        return json_response(_deployment_json(gone))

    return [list_deployments, get_deployment, put_deployment, delete_deployment]


def _rollout_start_handlers(service: InferenceService) -> list[Any]:
    @post(
        "/{name:str}/rollouts", opt=contract_scope(InferenceService.start_rollout), status_code=201
    )
    async def start_rollout(
        name: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """Start moving the deployment's traffic to a candidate; answers the rollout (201)."""
        example = '{"candidate": "<model ref>"}'
        body = decode_body(_ROLLOUT, await request.body(), what="body", example=example)
        rollout = await service.start_rollout(
            StartRollout(
                deployment=name,
                candidate=body.candidate,
                baseline=body.baseline,
                policy=body.policy,
            )
        )
        return json_response(_rollout_json(rollout), status_code=201)

    @get("/{name:str}/rollouts", opt=contract_scope(InferenceService.list_rollouts))
    async def list_deployment_rollouts(
        name: FromPath[str], limit: FromQuery[int] = 50, cursor: FromQuery[str | None] = None
    ) -> Response[bytes]:
        """One page of the deployment's rollouts, newest first."""
        return await _rollout_page(service, name, limit, cursor)

    return [start_rollout, list_deployment_rollouts]


def _rollout_handlers(service: InferenceService) -> list[Any]:
    @get("/", opt=contract_scope(InferenceService.list_rollouts))
    async def list_rollouts(
        deployment: FromQuery[str | None] = None,
        limit: FromQuery[int] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        """One page of rollouts (of every deployment, or ``?deployment=``), newest first."""
        return await _rollout_page(service, deployment, limit, cursor)

    @get("/{rollout_id:str}", opt=contract_scope(InferenceService.get_rollout))
    async def get_rollout(rollout_id: FromPath[str]) -> Response[bytes]:
        """A rollout with its history of decisions and their reasons."""
        return json_response(_rollout_json(await service.get_rollout(GetRollout(id=rollout_id))))

    @post("/{rollout_id:str}/promote", opt=contract_scope(InferenceService.promote_rollout))
    async def promote_rollout(
        rollout_id: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """Promote a running rollout now (``{"reason": ...}`` optional)."""
        reason = _reason(await request.body())
        asked = PromoteRollout(id=rollout_id, **({"reason": reason} if reason else {}))
        return json_response(_rollout_json(await service.promote_rollout(asked)), status_code=200)

    @post("/{rollout_id:str}/abort", opt=contract_scope(InferenceService.abort_rollout))
    async def abort_rollout(
        rollout_id: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """Abort a running rollout now: all traffic back to the baseline."""
        reason = _reason(await request.body())
        asked = AbortRollout(id=rollout_id, **({"reason": reason} if reason else {}))
        return json_response(_rollout_json(await service.abort_rollout(asked)), status_code=200)

    return [list_rollouts, get_rollout, promote_rollout, abort_rollout]


async def _rollout_page(
    service: InferenceService, deployment: str | None, limit: int, cursor: str | None
) -> Response[bytes]:
    page = await service.list_rollouts(
        from_params(ListRollouts, deployment=deployment, limit=limit, cursor=cursor)
    )
    items = [_rollout_json(r) for r in page.items]
    return json_response({"items": items, "next_cursor": page.next_cursor})


def _rollout_json(rollout: Rollout) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.to_builtins(rollout)
    return value


def _reason(raw: bytes) -> str | None:
    if not raw.strip():
        return None
    return decode_body(_REASON, raw, what="body", example='{"reason": "..."}').reason


def _batch_job_handlers(service: InferenceService) -> list[Any]:
    @post("/", opt=contract_scope(InferenceService.submit_batch_job), status_code=202)
    async def submit_batch_job(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Queue a batch job (JSON ``{"model", "inputs": {name: rows}}``); answers the job."""
        example = '{"model": "<ref>", "inputs": {...}}'
        body = decode_body(_BATCH_JOB, await request.body(), what="batch job", example=example)
        job = await service.submit_batch_job(
            SubmitBatchJob(
                model=body.model,
                inputs=_tensors(PredictBody(inputs=body.inputs)),
                chunk_rows=body.chunk_rows,
                coerce=True,
            )
        )
        return json_response(job, 202)

    @get("/{job_id:str}", opt=contract_scope(InferenceService.get_batch_job))
    async def get_batch_job(job_id: FromPath[str]) -> BatchJob:
        """A batch job's status and progress (``rows_done`` of ``rows``)."""
        return await service.get_batch_job(GetBatchJob(id=job_id))

    @get("/{job_id:str}/results", opt=contract_scope(InferenceService.fetch_batch_results))
    async def batch_results(job_id: FromPath[str]) -> Response[bytes]:
        """A succeeded job's outputs, rows per output in input order (409 until it succeeds)."""
        job = await service.get_batch_job(GetBatchJob(id=job_id))
        if job.status != "succeeded":
            raise Conflict(
                f"batch job {job_id!r} is {job.status}: results are available once it succeeds",
                details={"id": job_id, "status": job.status},
            )
        parts: dict[str, list[np.ndarray[Any, Any]]] = {}
        async for chunk in service.fetch_batch_results(FetchBatchResults(id=job_id)):
            for name, tensor in chunk.outputs.items():
                parts.setdefault(name, []).append(tensor.to_numpy())
        outputs = {name: np.concatenate(arrays).tolist() for name, arrays in parts.items()}
        return json_response(
            {"id": job.id, "model": job.model, "version": job.version, "outputs": outputs}
        )

    return [submit_batch_job, get_batch_job, batch_results]


def _deployment_body(name: str, raw: bytes) -> Deployment:
    example = '{"routes": [{"model": "<name:N>", "weight": 1}]}'
    body = decode_body(_DEPLOYMENT, raw, what="deployment", example=example)
    fallbacks = [
        Fallback(
            kind=f.kind,
            model=f.model,
            outputs=_tensors(PredictBody(inputs=f.outputs)) if f.outputs else {},
        )
        for f in body.fallbacks
    ]
    return Deployment(
        name=name,
        routes=body.routes,
        sticky_header=body.sticky_header,
        sticky_input=body.sticky_input,
        shadows=body.shadows,
        fallbacks=fallbacks,
        cache_ttl_s=body.cache_ttl_s,
        cache_max_entries=body.cache_max_entries,
    )


def _deployment_json(deployment: Deployment) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.to_builtins(deployment)
    value["fallbacks"] = [
        {
            "kind": f.kind,
            "model": f.model,
            "outputs": {k: t.to_numpy().tolist() for k, t in f.outputs.items()},
        }
        for f in deployment.fallbacks
    ]
    return value


def _decode(raw: bytes, packed: bool) -> PredictBody:
    body = decode_body(
        _MSGPACK if packed else _JSON,
        raw,
        what="prediction request",
        example='{"inputs": {"<input name>": [[...], ...]}}',
        kind="msgpack" if packed else "JSON",
    )
    if not body.inputs and not body.entities:
        raise InvalidInput(
            'no inputs: expected {"inputs": {"<input name>": [[...], ...]}}'
            ' or {"entities": {"<join key>": [...]}}'
        )
    return body


def _tensors(body: PredictBody) -> dict[str, Tensor]:
    tensors = {}
    for name, rows in body.inputs.items():
        try:
            array = np.asarray(rows)
        except ValueError:
            array = np.asarray(rows, dtype=object)
        if array.dtype == object or array.dtype.kind == "U":
            array = _text(name, array)
        tensors[name] = Tensor.from_numpy(array)
    return tensors


def _text(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    flat = array.reshape(-1)
    if not all(isinstance(v, str) for v in flat):
        raise InvalidInput(
            f"input {name!r} is ragged or mixes types: every row needs the same shape",
            details={"input": name},
        )
    return np.array([v.encode() for v in flat], dtype=object).reshape(array.shape)
