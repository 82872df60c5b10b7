"""The inference module's public routes: ``POST /v1/predict/{model_ref}`` and model status.

Bodies are JSON (``{"inputs": {"x": [[...]]}, "outputs": [...]}``) or msgpack with the same shape
(``Content-Type: application/x-msgpack``); answers use the request's format.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath

from app.kernel.settings import Settings
from app.modules.inference.oip import oip_routes
from contracts.common import InvalidInput, Scope, Tensor
from contracts.inference import GetModelStatus, InferenceService, LoadModel, ModelStatus, Predict

__all__ = ["routes"]

MSGPACK = "application/x-msgpack"


class PredictBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/predict/{model_ref}``: rows per input, optionally the outputs wanted."""

    inputs: dict[str, list[Any]]
    outputs: list[str] = []


_JSON = msgspec.json.Decoder(PredictBody)
_MSGPACK = msgspec.msgpack.Decoder(PredictBody)
_JSON_OUT = msgspec.json.Encoder()
_MSGPACK_OUT = msgspec.msgpack.Encoder()


def routes(service: InferenceService, settings: Settings) -> list[Any]:
    """Public routes of the inference module, calling ``service`` (local or remote)."""

    @post("/v1/predict/{model_ref:str}", opt={"scope": Scope.PREDICT.value}, status_code=200)
    async def predict(model_ref: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        """Predict with the model a reference resolves to."""
        packed = request.headers.get("content-type", "").startswith(MSGPACK)
        body = _decode(await request.body(), packed)
        prediction = await service.predict(
            Predict(model=model_ref, inputs=_tensors(body), outputs=body.outputs, coerce=True)
        )
        answer = {
            "outputs": {k: t.to_numpy().tolist() for k, t in prediction.outputs.items()},
            "model": prediction.model,
            "version": prediction.version,
            "prediction_id": prediction.prediction_id,
        }
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
        *oip_routes(service, settings),
    ]


def _decode(raw: bytes, packed: bool) -> PredictBody:
    if not raw:
        raise InvalidInput('empty body: expected {"inputs": {"<input name>": [[...], ...]}}')
    try:
        return _MSGPACK.decode(raw) if packed else _JSON.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid prediction request: {exc}") from None
    except msgspec.DecodeError as exc:
        kind = "msgpack" if packed else "JSON"
        raise InvalidInput(f"malformed {kind} body: {exc}") from None


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
