"""The inference module's public routes: ``POST /v1/predict/{model_ref}``, model status,
deployments (``/v1/inference/deployments``), their progressive rollouts
(``/v1/inference/deployments/{name}/rollouts``, ``/v1/inference/rollouts/{id}[/promote|/abort]``)
and batch jobs (``/v1/inference/batch-jobs``).

Bodies are JSON (``{"inputs": {"x": [[...]]}, "outputs": [...]}``) or msgpack with the same shape
(``Content-Type: application/x-msgpack``); answers use the request's format. A deployment's
default fallback answer is given, and shown, as rows per output like prediction outputs.

In JSON answers the elements of a ``BYTES`` output are strings when they are UTF-8 text, and
base64 only when they are not; msgpack answers carry them as raw bytes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar import Request, Response, Router, delete, get, post, put
from litestar.params import FromQuery, PathParameter

from app.kernel.http.bodies import contract_scope, decode_body, from_params, json_response
from app.kernel.http.openapi import JSON, NoBody, documented
from app.kernel.http.params import PageCursor, PageLimit
from app.kernel.settings import Settings
from app.modules.inference.http_bodies import (
    BATCH_EXAMPLE,
    PREDICT_ANSWER_EXAMPLE,
    PREDICT_EXAMPLE,
    BatchJobBody,
    BatchResults,
    DeploymentBody,
    DeploymentView,
    FallbackBody,
    ModelRef,
    Name,
    PredictAnswer,
    PredictBody,
    ReasonBody,
    RolloutBody,
    array_rows,
    json_rows,
    raw_rows,
)
from app.modules.inference.oip import oip_routes
from contracts.common import (
    Conflict,
    InvalidInput,
    Page,
    Scope,
    Tensor,
    validate_name,
)
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
    StartRollout,
    SubmitBatchJob,
)

__all__ = ["routes"]

MSGPACK = "application/x-msgpack"
MSGPACK_BYTES = MSGPACK.encode()

Id = Annotated[str, PathParameter(description="The identifier it was given at creation.")]

CREDENTIALS = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"x-api-key"})
"""Request headers passed on for stickiness as their SHA-256 digest, never as they are."""

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

    async def predict_direct(scope: Any, model_ref: str, raw: bytes) -> tuple[bytes, str]:
        """The prediction route's answer (body, media type) to ``raw`` sent with ``scope``."""
        headers = scope["headers"]
        packed = _content_type(headers).startswith(MSGPACK_BYTES)
        body = _decode(raw, packed)
        prediction = await service.predict(
            Predict(
                model=model_ref,
                inputs=_tensors(body),
                outputs=body.outputs,
                coerce=True,
                entities=body.entities,
                features=body.features,
                sticky=_sticky_headers(headers, model_ref),
            )
        )
        answered = _answer(prediction, packed=packed)
        if packed:
            return _MSGPACK_OUT.encode(answered), MSGPACK
        return _JSON_OUT.encode(answered), "application/json"

    @post(
        "/v1/predict/{model_ref:str}",
        # answered by predict_direct ahead of the router (app.kernel.http.direct); this handler
        # documents the route and answers what the direct path does not match
        opt={"scope": Scope.PREDICT.value, "direct": predict_direct},
        status_code=200,
        **documented(
            body=PredictBody,
            answer=PredictAnswer,
            media_types=(JSON, MSGPACK),
            body_example=PREDICT_EXAMPLE,
            answer_example=PREDICT_ANSWER_EXAMPLE,
            errors=(422,),
        ),
    )
    async def predict(model_ref: ModelRef, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Predict with the model (or deployment) a reference resolves to.

        Rows per input in, rows per output out, as JSON or msgpack (the answer uses the
        request's format). A shape or dtype the model does not take is 422.
        """
        content, media_type = await predict_direct(request.scope, model_ref, await request.body())
        return Response(content, media_type=media_type)

    @get("/v1/inference/models/{model_ref:str}", opt={"scope": Scope.READ.value})
    async def status(model_ref: ModelRef) -> ModelStatus:
        """Whether the version a reference resolves to is loaded (without loading it)."""
        return await service.model_status(GetModelStatus(model=model_ref))

    @post(
        "/v1/inference/models/{model_ref:str}/load",
        opt={"scope": Scope.READ.value},
        **documented(body=NoBody, answer=ModelStatus, status=201, body_required=False),
    )
    async def load(model_ref: ModelRef) -> ModelStatus:
        """Load and warm a version; answers once it is ready (or failed)."""
        return await service.load_model(LoadModel(model=model_ref))

    return [
        Router(path="/", route_handlers=[predict, status, load], tags=["inference"]),
        Router(
            path="/v1/inference/deployments",
            route_handlers=[*_deployment_handlers(service), *_rollout_start_handlers(service)],
            tags=["inference"],
        ),
        Router(
            path="/v1/inference/rollouts",
            route_handlers=_rollout_handlers(service),
            tags=["inference"],
        ),
        Router(
            path="/v1/inference/batch-jobs",
            route_handlers=_batch_job_handlers(service),
            tags=["inference"],
        ),
        *oip_routes(service, settings),
    ]


def _sticky_headers(headers: Iterable[tuple[bytes, bytes]], model_ref: str) -> dict[str, str]:
    """The headers a deployment's ``sticky_header`` may name (only a bare name can be one)."""
    if ":" in model_ref or "@" in model_ref:
        return {}
    sticky: dict[str, str] = {}
    for name, raw in headers:
        value = _digest(raw) if name in CREDENTIALS else raw.decode("latin-1")
        sticky.setdefault(name.decode("latin-1").lower(), value)
    return sticky


@functools.lru_cache(maxsize=1024)
def _digest(credential: bytes) -> str:
    """A credential header's value as it travels: its SHA-256 (clients repeat theirs, so the
    digest is remembered)."""
    return hashlib.sha256(credential).hexdigest()


def _content_type(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value
    return b""


def _answer(prediction: Prediction, *, packed: bool) -> PredictAnswer:
    rows = raw_rows if packed else json_rows
    return PredictAnswer(
        outputs={k: rows(t) for k, t in prediction.outputs.items()},
        model=prediction.model,
        version=prediction.version,
        prediction_id=prediction.prediction_id,
        deployment=prediction.deployment,
        fallback=prediction.fallback,
        cached=prediction.cached,
        labels=prediction.labels,
    )


def _deployment_handlers(service: InferenceService) -> list[Any]:
    @get(
        "/",
        opt=contract_scope(InferenceService.list_deployments),
        **documented(answer=Page[DeploymentView]),
    )
    async def list_deployments(limit: PageLimit = 50, cursor: PageCursor = None) -> Response[bytes]:
        """One page of deployments ordered by name: ``{"items": [...], "next_cursor": ...}``."""
        page = await service.list_deployments(
            from_params(ListDeployments, limit=limit, cursor=cursor)
        )
        items = [_deployment_json(d) for d in page.items]
        return json_response({"items": items, "next_cursor": page.next_cursor})

    @get(
        "/{name:str}",
        opt=contract_scope(InferenceService.get_deployment),
        **documented(answer=DeploymentView),
    )
    async def get_deployment(name: Name) -> Response[bytes]:
        """A deployment by name."""
        return json_response(
            _deployment_json(await service.get_deployment(GetDeployment(name=name)))
        )

    @put(
        "/{name:str}",
        opt=contract_scope(InferenceService.put_deployment),
        status_code=200,
        **documented(
            body=DeploymentBody,
            answer=DeploymentView,
            body_example={
                "routes": [{"model": "iris:3", "weight": 0.9}, {"model": "iris:4", "weight": 0.1}]
            },
            errors=(422,),
        ),
    )
    async def put_deployment(name: Name, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Create or replace a deployment; answers it as stored."""
        deployment = _deployment_body(name, await request.body())
        stored = await service.put_deployment(PutDeployment(deployment=deployment))
        return json_response(_deployment_json(stored))

    @delete(
        "/{name:str}",
        opt=contract_scope(InferenceService.delete_deployment),
        status_code=200,
        **documented(answer=DeploymentView),
    )
    async def delete_deployment(name: Name) -> Response[bytes]:
        """Delete a deployment; answers what was deleted."""
        gone = await service.delete_deployment(DeleteDeployment(name=name))
        return json_response(_deployment_json(gone))

    return [list_deployments, get_deployment, put_deployment, delete_deployment]


def _rollout_start_handlers(service: InferenceService) -> list[Any]:
    @post(
        "/{name:str}/rollouts",
        opt=contract_scope(InferenceService.start_rollout),
        status_code=201,
        **documented(
            body=RolloutBody, answer=Rollout, status=201, body_example={"candidate": "iris:4"}
        ),
    )
    async def start_rollout(name: Name, request: Request[Any, Any, Any]) -> Response[bytes]:
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

    @get(
        "/{name:str}/rollouts",
        opt=contract_scope(InferenceService.list_rollouts),
        **documented(answer=Page[Rollout]),
    )
    async def list_deployment_rollouts(
        name: Name, limit: PageLimit = 50, cursor: PageCursor = None
    ) -> Response[bytes]:
        """One page of the deployment's rollouts, newest first."""
        validate_name(name, what="deployment name")  # not an empty page for a name none can have
        return await _rollout_page(service, name, limit, cursor)

    return [start_rollout, list_deployment_rollouts]


def _rollout_handlers(service: InferenceService) -> list[Any]:
    @get(
        "/", opt=contract_scope(InferenceService.list_rollouts), **documented(answer=Page[Rollout])
    )
    async def list_rollouts(
        deployment: FromQuery[str | None] = None,
        limit: PageLimit = 50,
        cursor: PageCursor = None,
    ) -> Response[bytes]:
        """One page of rollouts (of every deployment, or ``?deployment=``), newest first."""
        return await _rollout_page(service, deployment, limit, cursor)

    @get(
        "/{rollout_id:str}",
        opt=contract_scope(InferenceService.get_rollout),
        **documented(answer=Rollout),
    )
    async def get_rollout(rollout_id: Id) -> Response[bytes]:
        """A rollout with its history of decisions and their reasons."""
        return json_response(_rollout_json(await service.get_rollout(GetRollout(id=rollout_id))))

    @post(
        "/{rollout_id:str}/promote",
        opt=contract_scope(InferenceService.promote_rollout),
        status_code=200,
        **documented(body=ReasonBody, answer=Rollout, body_required=False, errors=(409,)),
    )
    async def promote_rollout(rollout_id: Id, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Promote a running rollout now (``{"reason": ...}`` optional)."""
        reason = _reason(await request.body())
        asked = PromoteRollout(id=rollout_id, **({"reason": reason} if reason else {}))
        return json_response(_rollout_json(await service.promote_rollout(asked)), status_code=200)

    @post(
        "/{rollout_id:str}/abort",
        opt=contract_scope(InferenceService.abort_rollout),
        status_code=200,
        **documented(body=ReasonBody, answer=Rollout, body_required=False, errors=(409,)),
    )
    async def abort_rollout(rollout_id: Id, request: Request[Any, Any, Any]) -> Response[bytes]:
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
    @post(
        "/",
        opt=contract_scope(InferenceService.submit_batch_job),
        status_code=202,
        **documented(body=BatchJobBody, answer=BatchJob, status=202, body_example=BATCH_EXAMPLE),
    )
    async def submit_batch_job(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Queue a batch job (JSON ``{"model", "inputs": {name: rows}}``, or a ``source`` file
        or table and optionally an ``output`` Parquet file); answers the job."""
        example = '{"model": "<ref>", "inputs": {...}}'
        body = decode_body(_BATCH_JOB, await request.body(), what="batch job", example=example)
        job = await service.submit_batch_job(
            SubmitBatchJob(
                model=body.model,
                inputs=_tensors(PredictBody(inputs=body.inputs)),
                chunk_rows=body.chunk_rows,
                coerce=True,
                source=body.source,
                output=body.output,
            )
        )
        return json_response(job, 202)

    @get("/{job_id:str}", opt=contract_scope(InferenceService.get_batch_job))
    async def get_batch_job(job_id: Id) -> BatchJob:
        """A batch job's status and progress (``rows_done`` of ``rows``)."""
        return await service.get_batch_job(GetBatchJob(id=job_id))

    @get(
        "/{job_id:str}/results",
        opt=contract_scope(InferenceService.fetch_batch_results),
        **documented(answer=BatchResults, errors=(409,)),
    )
    async def batch_results(job_id: Id) -> Response[bytes]:
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
        outputs = {name: array_rows(np.concatenate(arrays)) for name, arrays in parts.items()}
        return json_response(
            BatchResults(id=job.id, model=job.model, version=job.version, outputs=outputs)
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


def _deployment_json(deployment: Deployment) -> DeploymentView:
    fallbacks = [
        FallbackBody(
            kind=f.kind, model=f.model, outputs={k: json_rows(t) for k, t in f.outputs.items()}
        )
        for f in deployment.fallbacks
    ]
    return DeploymentView(
        name=deployment.name,
        routes=deployment.routes,
        sticky_header=deployment.sticky_header,
        sticky_input=deployment.sticky_input,
        shadows=deployment.shadows,
        fallbacks=fallbacks,
        cache_ttl_s=deployment.cache_ttl_s,
        cache_max_entries=deployment.cache_max_entries,
        updated_at=deployment.updated_at,
    )


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
