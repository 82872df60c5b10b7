"""The Open Inference Protocol (KServe v2) HTTP routes, under ``/v2``, for ``tritonclient``.

Health, server and model metadata, model readiness and inference, with the binary tensor data
extension (see :mod:`._oip_codec`). ``{m}`` resolves like a bare model name; ``/versions/{v}``
like ``name:v``. Asking whether a model is ready starts loading it; asking for its metadata
waits for the load, since a version's signature is known once it is loaded.

Errors keep Quarry's shape ``{"error", "code", "details"}``, whose ``error`` is what OIP clients
read. Request bodies are read raw, so any ``Content-Type`` is accepted, as Triton does.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.openapi.spec import OpenAPIType
from litestar.params import PathParameter

from app.kernel.http.openapi import JSON, documented
from app.kernel.http.patterns import integer_pattern
from app.kernel.numbers import INT32_MAX, parse_int
from app.kernel.settings import Settings
from app.modules.inference._oip_codec import (
    HEADER_LENGTH,
    InferenceRequest,
    InferenceResponse,
    decode_content,
    encode_prediction,
    parse_infer_request,
)
from contracts.common import NAME_PATTERN, Scope, Unavailable, method_info, validate_name
from contracts.inference import InferenceService, LoadModel, ModelStatus, Predict
from contracts.registry import TensorSpec

__all__ = ["ModelMetadata", "ServerMetadata", "TensorMetadata", "oip_routes"]

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]
_PROBE = {"scope": Scope.READ.value, "open": "probe"}

ModelName = Annotated[
    str,
    PathParameter(
        description="The model: resolves like a bare name (deployment, `champion`, latest).",
        schema_extra={"pattern": NAME_PATTERN},
    ),
]
_VERSION_PATTERN = f"^{integer_pattern(1, INT32_MAX)}$"
ModelVersion = Annotated[
    str | None,
    PathParameter(
        description="A version number.",
        # a path segment is never null: the `None` default only serves the path without it
        schema_extra={"one_of": None, "type": OpenAPIType.STRING, "pattern": _VERSION_PATTERN},
    ),
]

INFER_EXAMPLE = {
    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}
INFER_ANSWER_EXAMPLE = {
    "model_name": "iris",
    "model_version": "3",
    "id": "0b7e2f9c5d1a4e3f8a6b2c9d0e1f2a3b",
    "parameters": {},
    "outputs": [{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["setosa"]}],
}


class ServerMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """One input or output of a model (``-1`` = any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelReady(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v2/models/{m}[/versions/{v}]/ready`` once the version is loaded and warmed."""

    name: str
    version: str
    ready: bool


class ModelMetadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``GET /v2/models/{m}[/versions/{v}]`` (``parameters`` only when there are any)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, list[str]] = {}
    """``classes``: the class labels of a classifier, in its probability output's order."""


def oip_routes(service: InferenceService, settings: Settings) -> list[Any]:
    """The OIP handlers, bound to ``service``, in one router at ``/v2``."""
    handlers = [
        *_server_handlers(_server_version()),
        *_model_handlers(service),
        _infer_handler(service, settings),
    ]
    return [Router(path="/v2", route_handlers=handlers, tags=["Open Inference Protocol"])]


def _opt(contract_method: Callable[..., Any]) -> dict[str, Any]:
    info = method_info(contract_method)
    if info is None:  # pragma: no cover - every contract method carries a marker
        raise TypeError(f"{contract_method.__qualname__} has no @method marker")
    return {"scope": info.scope.value}


def _server_version() -> str:
    try:
        return metadata.version("quarryml")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _model_paths(suffix: str = "") -> list[str]:
    return [f"/models/{{m:str}}{suffix}", f"/models/{{m:str}}/versions/{{v:str}}{suffix}"]


def _ref(m: str, v: str | None) -> str:
    """The model reference for ``{m}`` and, when given, ``/versions/{v}``."""
    name = validate_name(m, what="model name")
    if v is None:
        return name
    version = parse_int(v, what="model version", minimum=1, maximum=INT32_MAX, field="version")
    return f"{name}:{version}"


def _server_handlers(version: str) -> list[Any]:
    @get("/", opt={"scope": Scope.READ.value})
    async def server_metadata() -> ServerMetadata:
        """Server name, version and the protocol extensions it supports."""
        return ServerMetadata(name="quarry", version=version, extensions=EXTENSIONS)

    @get("/health/live", opt={**_PROBE})
    async def server_live() -> dict[str, bool]:
        """Liveness: the server answers."""
        return {"live": True}

    @get("/health/ready", opt={**_PROBE})
    async def server_ready() -> dict[str, bool]:
        """Readiness: the server takes inference requests (each model has its own ``ready``)."""
        return {"ready": True}

    return [server_metadata, server_live, server_ready]


def _model_handlers(service: InferenceService) -> list[Any]:
    @get(_model_paths(), opt=_opt(InferenceService.load_model))
    async def model_metadata(m: ModelName, v: ModelVersion = None) -> ModelMetadata:
        """A model's version, platform, inputs and outputs (loading it first if need be)."""
        status = await _loaded(service, m, _ref(m, v))
        return ModelMetadata(
            name=m,
            versions=[str(status.version)],
            platform=PLATFORM,
            inputs=_tensors(status.inputs),
            outputs=_tensors(status.outputs),
            parameters={"classes": status.classes} if status.classes else {},
        )

    @get(
        _model_paths("/ready"),
        opt=_opt(InferenceService.load_model),
        **documented(answer=ModelReady, description="Loaded and warmed (400 until then)"),
    )
    async def model_ready(m: ModelName, v: ModelVersion = None) -> Response[Any]:
        """200 once the model is loaded and warmed, else 400; asking starts the load."""
        status = await service.load_model(LoadModel(model=_ref(m, v), wait=False))
        if status.state == "ready":
            return Response({"name": m, "version": str(status.version), "ready": True})
        return Response(_not_ready(m, status), status_code=400)

    return [model_metadata, model_ready]


def _infer_handler(service: InferenceService, settings: Settings) -> Any:
    @post(
        _model_paths("/infer"),
        opt=_opt(InferenceService.predict),
        status_code=200,
        **documented(
            body=InferenceRequest,
            answer=InferenceResponse,
            media_types=(JSON,),
            body_example=INFER_EXAMPLE,
            answer_example=INFER_ANSWER_EXAMPLE,
            raw_answers={"application/octet-stream": "JSON answer then binary outputs"},
            errors=(422,),
        ),
    )
    async def infer(
        m: ModelName, request: Request[Any, Any, Any], v: ModelVersion = None
    ) -> Response[bytes]:
        """Run the model on JSON and/or binary tensors; answers JSON, or JSON + binary data.

        With the binary tensor extension the body is the JSON request followed by the tensors'
        bytes, its JSON length in the ``Inference-Header-Content-Length`` header; binary outputs
        come back the same way (``application/octet-stream``, with that header).
        """
        ref = _ref(m, v)
        body = decode_content(
            await request.body(), request.headers.get("content-encoding"), settings.max_body_bytes
        )
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        prediction = await service.predict(
            Predict(model=ref, inputs=parsed.inputs, outputs=parsed.outputs)
        )
        answer = encode_prediction(prediction, parsed, m)
        if answer.header_length is None:
            return Response(answer.body, media_type="application/json")
        return Response(
            answer.body,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(answer.header_length)},
        )

    return infer


async def _loaded(service: InferenceService, m: str, ref: str) -> ModelStatus:
    """The status of a loaded version: its signature is known once it is loaded."""
    status = await service.load_model(LoadModel(model=ref, wait=False))
    if status.state == "ready" or status.inputs:
        return status
    status = await service.load_model(LoadModel(model=ref, wait=True))
    if status.state != "ready" and not status.inputs:
        raise Unavailable(
            f"model {m!r} version {status.version} is not ready ({_reason(status)})",
            details={"model": m, "version": status.version, "state": status.state},
        )
    return status


def _tensors(specs: list[TensorSpec]) -> list[TensorMetadata]:
    return [TensorMetadata(name=s.name, datatype=s.dtype, shape=list(s.shape)) for s in specs]


def _reason(status: ModelStatus) -> str:
    return f"{status.state}: {status.error}" if status.error else status.state


def _not_ready(m: str, status: ModelStatus) -> dict[str, Any]:
    return {
        "error": f"model {m!r} version {status.version} is not ready ({_reason(status)})",
        "code": "not_ready",
        "details": {"model": m, "version": status.version, "state": status.state},
    }
