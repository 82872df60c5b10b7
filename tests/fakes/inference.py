"""An in-memory :class:`~contracts.inference.InferenceService` with a few checkable models.

- ``id`` (versions 1 and 2): FP32 ``x`` ``[-1, 4]`` -> ``y = x`` and ``s = x.sum(axis=1)``.
- ``echo`` (version 1): FP32 ``x`` ``[-1, -1]`` -> ``y = x``.
- ``text`` (version 1): BYTES ``t`` ``[-1]`` -> ``u``, each element upper-cased.
- ``cold`` (version 1, the ``id`` signature): ``loading`` until asked to load a second time.
- ``busy`` (version 1): every prediction is :class:`~contracts.common.Unavailable`.
- ``broken`` (version 1): fails to load.

Anything else is :class:`~contracts.common.NotFound`; inputs that break a signature are
:class:`~contracts.common.UnprocessableInput` naming the input, as the real service answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from contracts.common import ModelRef, NotFound, Tensor, Unavailable, UnprocessableInput
from contracts.inference import (
    GetModelStatus,
    LoadModel,
    ModelStatus,
    Predict,
    Prediction,
    UnloadModel,
)
from contracts.registry import TensorSpec

__all__ = ["FakeInferenceService", "FakeModel"]

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class FakeModel:
    """A model's versions, signature and what it computes."""

    versions: tuple[int, ...]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    run: Callable[[Arrays], Arrays]
    load_error: str | None = None


def _numbers(inputs: Arrays) -> Arrays:
    x = inputs["x"]
    return {"y": x, "s": x.sum(axis=1, dtype=np.float32)}


def _upper(inputs: Arrays) -> Arrays:
    return {"u": np.array([v.upper() for v in inputs["t"].reshape(-1)], dtype=object)}


def _raise_busy(_inputs: Arrays) -> Arrays:
    raise Unavailable("model 'busy' has too many requests queued", retry_after=2)


_NUMBERS_IN = [TensorSpec(name="x", dtype="FP32", shape=[-1, 4])]
_NUMBERS_OUT = [
    TensorSpec(name="y", dtype="FP32", shape=[-1, 4]),
    TensorSpec(name="s", dtype="FP32", shape=[-1]),
]
MODELS = {
    "id": FakeModel((1, 2), _NUMBERS_IN, _NUMBERS_OUT, _numbers),
    "echo": FakeModel(
        (1,),
        [TensorSpec(name="x", dtype="FP32", shape=[-1, -1])],
        [TensorSpec(name="y", dtype="FP32", shape=[-1, -1])],
        lambda inputs: {"y": inputs["x"]},
    ),
    "text": FakeModel(
        (1,),
        [TensorSpec(name="t", dtype="BYTES", shape=[-1])],
        [TensorSpec(name="u", dtype="BYTES", shape=[-1])],
        _upper,
    ),
    "cold": FakeModel((1,), _NUMBERS_IN, _NUMBERS_OUT, _numbers),
    "busy": FakeModel((1,), _NUMBERS_IN, _NUMBERS_OUT, _raise_busy),
    "broken": FakeModel((1,), [], [], _raise_busy, load_error="the artifact is not ONNX"),
}


@dataclass
class FakeInferenceService:
    """Implements the Protocol over :data:`MODELS`, recording every call it gets."""

    predictions: list[Predict] = field(default_factory=list)
    loads: list[LoadModel] = field(default_factory=list)
    _asked: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget every recorded call (``cold`` is cold again)."""
        self.predictions.clear()
        self.loads.clear()
        self._asked.clear()

    async def predict(self, request: Predict) -> Prediction:
        """Check the signature, run the model, keep the outputs asked for."""
        self.predictions.append(request)
        model, version = self._resolve(request.model)
        arrays = {spec.name: _checked(spec, request.inputs) for spec in model.inputs}
        results = model.run(arrays)
        for name in request.outputs:
            if name not in results:
                raise UnprocessableInput(f"model has no output {name!r}", details={"output": name})
        wanted = request.outputs or list(results)
        return Prediction(
            model=f"{ModelRef.parse(request.model).name}:{version}",
            version=version,
            outputs={name: Tensor.from_numpy(results[name]) for name in wanted},
            prediction_id=uuid.uuid4().hex,
        )

    async def load_model(self, request: LoadModel) -> ModelStatus:
        """``cold`` is loading when first asked without waiting; ``broken`` fails; the rest are
        ready."""
        self.loads.append(request)
        model, version = self._resolve(request.model)
        name = ModelRef.parse(request.model).name
        self._asked[name] = self._asked.get(name, 0) + 1
        cold = name == "cold" and self._asked[name] == 1 and not request.wait
        return _status(name, version, model, "loading" if cold else "ready")

    async def model_status(self, request: GetModelStatus) -> ModelStatus:
        """The state without loading: ``cold`` is unloaded until asked for."""
        model, version = self._resolve(request.model)
        name = ModelRef.parse(request.model).name
        state = "unloaded" if name == "cold" and not self._asked.get(name) else "ready"
        return _status(name, version, model, state)

    async def unload_model(self, request: UnloadModel) -> ModelStatus:
        """Every model reports itself unloaded afterwards."""
        model, version = self._resolve(request.model)
        return _status(ModelRef.parse(request.model).name, version, model, "unloaded")

    def _resolve(self, text: str) -> tuple[FakeModel, int]:
        ref = ModelRef.parse(text)
        model = MODELS.get(ref.name)
        if model is None:
            raise NotFound(f"model {ref.name!r} does not exist", details={"model": ref.name})
        version = max(model.versions) if ref.version is None else ref.version
        if version not in model.versions:
            raise NotFound(
                f"model {ref.name!r} has no version {version}",
                details={"model": ref.name, "version": version},
            )
        return model, version


def _status(name: str, version: int, model: FakeModel, state: Any) -> ModelStatus:
    if model.load_error is not None:
        return ModelStatus(model=name, version=version, state="failed", error=model.load_error)
    if state != "ready":  # as the real service: the signature is known once loaded
        return ModelStatus(model=name, version=version, state=state)
    return ModelStatus(
        model=name,
        version=version,
        state=state,
        inputs=model.inputs,
        outputs=model.outputs,
        providers=["CPUExecutionProvider"],
    )


def _checked(spec: TensorSpec, inputs: dict[str, Tensor]) -> npt.NDArray[Any]:
    tensor = inputs.get(spec.name)
    if tensor is None:
        raise UnprocessableInput(f"input {spec.name!r} is missing", details={"input": spec.name})
    fits = len(tensor.shape) == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, tensor.shape, strict=True)
    )
    if tensor.dtype != spec.dtype or not fits:
        raise UnprocessableInput(
            f"input {spec.name!r} must be {spec.dtype} {spec.shape}, got {tensor.dtype}"
            f" {list(tensor.shape)}",
            details={"input": spec.name},
        )
    return tensor.to_numpy()
