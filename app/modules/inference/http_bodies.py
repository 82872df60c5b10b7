"""The shapes of the inference module's public HTTP bodies and answers, and how tensors are shown
in JSON answers.

Route-level Structs built from the contract's types: the routes decode and encode them
themselves (JSON or msgpack, errors in Quarry's shape) and declare them in the OpenAPI schema.
In JSON answers the elements of a ``BYTES`` tensor are strings when they are UTF-8 text, and
base64 only when they are not.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import numpy as np
from litestar.openapi.spec import Schema
from litestar.params import PathParameter

from app.kernel.http.openapi import MODEL_REF_PATTERN
from app.modules.inference.batch_jobs import MAX_CHUNK_ROWS
from contracts.common import NAME_PATTERN, Count, PositiveCount, Seconds, Tensor
from contracts.features import Value
from contracts.inference import BatchOutput, BatchSource, RolloutPolicy, Route

__all__ = [
    "BATCH_EXAMPLE",
    "PREDICT_ANSWER_EXAMPLE",
    "PREDICT_EXAMPLE",
    "BatchJobBody",
    "BatchResults",
    "DeploymentBody",
    "DeploymentView",
    "FallbackBody",
    "ModelRef",
    "Name",
    "PredictAnswer",
    "PredictBody",
    "ReasonBody",
    "RolloutBody",
    "array_rows",
    "json_rows",
    "raw_rows",
]

ModelRef = Annotated[
    str,
    PathParameter(
        description="A model reference: `name:N` (version N), `name@alias`, or a bare `name`"
        " (the deployment of that name, else alias `champion`, else the highest version).",
        schema_extra={"pattern": MODEL_REF_PATTERN},
    ),
]
Name = Annotated[
    str,
    PathParameter(description="The deployment's name.", schema_extra={"pattern": NAME_PATTERN}),
]

PREDICT_EXAMPLE = {"inputs": {"x": [[5.1, 3.5, 1.4, 0.2]]}}
PREDICT_ANSWER_EXAMPLE = {
    "outputs": {"output_label": ["setosa"], "output_probability": [[0.97, 0.02, 0.01]]},
    "model": "iris",
    "version": 3,
    "prediction_id": "0b7e2f9c5d1a4e3f8a6b2c9d0e1f2a3b",
    "labels": ["setosa"],
}
BATCH_EXAMPLE = {"model": "iris@champion", "inputs": {"x": [[5.1, 3.5, 1.4, 0.2]]}}


class PredictBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/predict/{model_ref}``: rows per input (or entities), the outputs wanted.

    By entity: ``{"entities": {"user_id": [1, 2]}, "features": {"view:feature": [v, null]}}``.
    """

    inputs: dict[str, list[Any]] = {}
    outputs: list[str] = []
    entities: dict[str, list[Value]] = {}
    features: dict[str, list[Value]] = {}

    openapi_extra: ClassVar[dict[str, Any]] = {
        "any_of": [
            Schema(required=["inputs"], properties={"inputs": Schema(min_properties=1)}),
            Schema(required=["entities"], properties={"entities": Schema(min_properties=1)}),
        ]
    }
    """Inputs, or entities to build them from: a request with neither is refused."""


class PredictAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The answer of ``POST /v1/predict/{model_ref}``: rows per output, and which version gave
    them (``deployment``, ``fallback`` and ``cached`` only when they apply; ``labels`` when the
    version has classes)."""

    outputs: dict[str, list[Any]]
    model: str
    version: Count
    prediction_id: str
    deployment: str | None = None
    fallback: str | None = None
    cached: bool = False
    labels: list[str] = []
    """For a version with classes: the predicted class of each row."""


class BatchResults(msgspec.Struct, frozen=True, kw_only=True):
    """A succeeded batch job's outputs, rows per output in input order."""

    id: str
    model: str
    version: int | None
    outputs: dict[str, list[Any]]


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


class DeploymentView(msgspec.Struct, frozen=True, kw_only=True):
    """A deployment as answered: a default fallback's outputs as rows per output."""

    name: str
    routes: list[Route]
    sticky_header: str | None = None
    sticky_input: str | None = None
    shadows: list[str] = []
    fallbacks: list[FallbackBody] = []
    cache_ttl_s: Seconds = 0
    cache_max_entries: PositiveCount = 1000
    updated_at: datetime | None = None


class BatchJobBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/inference/batch-jobs``: the model reference and rows per input, or a
    ``source`` to read them from (a file or a table); an ``output`` file to write the results
    to (see :class:`contracts.inference.BatchSource` and ``BatchOutput``)."""

    model: str
    inputs: dict[str, list[Any]] = {}
    chunk_rows: Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK_ROWS)] = 1024
    source: BatchSource | None = None
    output: BatchOutput | None = None


class RolloutBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/inference/deployments/{name}/rollouts``: the candidate, optionally the baseline
    and the policy (each field of :class:`RolloutPolicy` defaults)."""

    candidate: str
    baseline: str | None = None
    policy: RolloutPolicy = RolloutPolicy()


class ReasonBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/inference/rollouts/{id}/promote`` or ``/abort``: an optional reason."""

    reason: str | None = None


def raw_rows(tensor: Tensor) -> Any:
    """A tensor as rows for msgpack, whose ``BYTES`` elements stay bytes."""
    return tensor.to_numpy().tolist()


def json_rows(tensor: Tensor) -> Any:
    """A tensor as JSON rows (see :func:`array_rows`)."""
    return array_rows(tensor.to_numpy())


def array_rows(array: np.ndarray[Any, Any]) -> Any:
    """An array as JSON rows: ``BYTES`` elements as text when they are UTF-8, else base64."""
    if array.dtype == object and array.size:
        array = _READABLE(array)
    return array.tolist()


def _readable(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode("ascii")


_READABLE = np.frompyfunc(_readable, 1, 1)
