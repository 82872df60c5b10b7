"""The inference contract: predictions from registered ONNX models and their serving state."""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from contracts.common import Scope, Tensor, method
from contracts.registry import TensorSpec

__all__ = [
    "VERSION",
    "GetModelStatus",
    "InferenceService",
    "LoadModel",
    "ModelStatus",
    "Predict",
    "Prediction",
    "UnloadModel",
]

VERSION = (1, 0)
"""Contract version ``(major, minor)``; remote calls refuse a different major."""


class Predict(msgspec.Struct, frozen=True, kw_only=True):
    """Run a model on a batch of rows.

    ``model`` is a model reference (``name:N``, ``name@alias`` or a bare name); ``inputs`` maps
    each input name of the model's signature to a tensor whose first dimension is the batch.
    Unknown inputs are dropped; ``outputs`` (empty = all) selects what comes back. Inputs must
    match the signature's dtypes or cast to them safely; ``coerce=True`` (inputs that came from a
    text format such as JSON, which has no float32) converts numbers to the signature's dtype
    whenever every value is representable there.
    """

    model: str
    inputs: dict[str, Tensor]
    outputs: list[str] = []
    coerce: bool = False


class Prediction(msgspec.Struct, frozen=True, kw_only=True):
    """The outputs of one prediction and which model version produced them."""

    model: str
    version: int
    outputs: dict[str, Tensor]
    prediction_id: str


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
    version: int
    state: Literal["unloaded", "loading", "ready", "failed"]
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    providers: list[str] = []
    error: str | None = None


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
