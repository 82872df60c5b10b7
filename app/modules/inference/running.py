"""Running a plan: the model runs, shadows, fallbacks and cached answers behind one prediction.

:meth:`Runner.run` never raises for what went wrong in a run: it answers one :class:`Outcome`
(the prediction or the error, the version it came from, the inputs it built), which the service
records and then returns or raises.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from app.kernel import context
from app.kernel.ids import ordered_id
from app.modules.inference.deployments import FALLIBLE, Plan, default_answer
from app.modules.inference.entities import entity_inputs
from app.modules.inference.inputs import numpy_dtype, prepare_inputs
from app.modules.inference.labels import labels_of
from app.modules.inference.resolver import Key, Resolver
from contracts.common import (
    DeadlineExceeded,
    NotFound,
    QuarryError,
    Tensor,
    UnprocessableInput,
)
from contracts.inference import Predict, Prediction
from contracts.registry import Signature

if TYPE_CHECKING:
    from app.modules.inference._cache import ResponseCache
    from app.modules.inference.loading import Loader
    from contracts.features import FeaturesService

__all__ = ["Outcome", "Runner"]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What running a plan came to: a prediction or an error, and where it came from.

    A Struct rather than a frozen dataclass: it is built once or twice per prediction, and a
    Struct builds in a fraction of the time (it is never encoded)."""

    prediction: Prediction | None = None
    error: Exception | None = None
    served: Key | None = None
    """The version that answered, or that failed (a deployment's routed version; for a model
    reference, the version once it was loaded); ``None`` when it failed before either."""
    deployment: str | None = None
    """The deployment that routed the request."""
    inputs: dict[str, Tensor] = {}
    """The inputs built for a predict-by-entity call (what its record logs)."""


@dataclass
class _Shadows:
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Runner:
    """Runs plans on the loaded models; see the module docstring."""

    def __init__(
        self,
        *,
        loader: Loader,
        resolver: Resolver,
        answers: ResponseCache,
        features: FeaturesService | None,
        max_rows: int,
        logger: logging.Logger,
    ) -> None:
        self._loader = loader
        self._resolver = resolver
        self._answers = answers
        self._features = features
        self._max_rows = max_rows
        self._log = logger
        self._shadows = _Shadows()

    async def run(self, plan: Plan, request: Predict) -> Outcome:
        """Answer ``request`` as ``plan`` says."""
        deployment = plan.deployment
        if deployment is None:
            return await self.run_model(plan.primary, request)
        name = deployment.name
        if plan.cache_key is not None:
            hit = self._answers.get(name, plan.cache_key)
            if hit is not None:
                answer = msgspec.structs.replace(hit, prediction_id=ordered_id(), cached=True)
                return Outcome(prediction=answer, served=plan.primary, deployment=name)
        for shadow in plan.shadows:
            self._shadow(name, shadow, request)
        outcome = await self._primary(plan, request)
        if outcome.prediction is not None:
            answer = msgspec.structs.replace(outcome.prediction, deployment=name)
            if plan.cache_key is not None:
                self._answers.put(deployment, plan.cache_key, answer)
            return Outcome(
                prediction=answer, served=outcome.served, deployment=name, inputs=outcome.inputs
            )
        error = outcome.error
        if plan.fallbacks and isinstance(error, FALLIBLE):
            fallen = await self._fall_back(plan, request, error)
            if fallen.prediction is not None:
                return fallen
        return Outcome(error=error, served=plan.primary, deployment=name)

    async def run_model(self, key: Key, request: Predict) -> Outcome:
        """Run version ``key`` on ``request`` (loading it on first use)."""
        try:
            served = await self._loader.serving(key)
        except Exception as exc:
            return Outcome(error=exc)
        model = served.model
        built: dict[str, Tensor] = {}
        try:
            if request.entities:
                built = await entity_inputs(self._features, model, request)
                request = msgspec.structs.replace(request, inputs=built, coerce=True)
            signature = model.signature
            arrays = _arrays(request, signature)
            feeds, rows = prepare_inputs(signature, arrays, max_rows=self._max_rows)
            outputs = await served.batcher.submit(feeds, rows, context.current().deadline)
            prediction = Prediction(
                model=model.name,
                version=model.version,
                outputs=_select(outputs, request.outputs),
                prediction_id=ordered_id(),
                labels=labels_of(model.classes, outputs),
            )
        except Exception as exc:
            return Outcome(error=exc, served=key, inputs=built)
        return Outcome(prediction=prediction, served=key, inputs=built)

    async def _primary(self, plan: Plan, request: Predict) -> Outcome:
        if not plan.fallbacks:
            return await self.run_model(plan.primary, request)
        budget = context.remaining() * plan.budget_share
        with context.use(context.current().with_timeout(budget)):
            try:
                return await asyncio.wait_for(self.run_model(plan.primary, request), budget)
            except TimeoutError:
                assert plan.deployment is not None
                error = DeadlineExceeded(
                    f"deployment {plan.deployment.name}: route {plan.route} missed its deadline"
                )
                return Outcome(error=error, served=plan.primary)

    async def _fall_back(self, plan: Plan, request: Predict, error: QuarryError) -> Outcome:
        deployment = plan.deployment
        assert deployment is not None
        self._log.warning(
            "deployment %s: primary failed (%s), trying fallbacks", deployment.name, error.message
        )
        for fallback in plan.fallbacks:
            if fallback.kind == "default":
                answer = default_answer(deployment, fallback, request)
                answer = msgspec.structs.replace(answer, deployment=deployment.name)
                return Outcome(prediction=answer, deployment=deployment.name)
            assert fallback.model is not None
            try:
                key = await self._resolver.version(fallback.model)
                outcome = await self.run_model(key, request)
            except Exception as exc:
                outcome = Outcome(error=exc)
            if outcome.prediction is None:
                if isinstance(outcome.error, FALLIBLE):
                    self._log.warning(
                        "deployment %s: fallback %s failed: %s",
                        deployment.name,
                        fallback.model,
                        outcome.error.message,
                    )
                    continue
                return Outcome(error=outcome.error, served=plan.primary, deployment=deployment.name)
            answer = msgspec.structs.replace(
                outcome.prediction, deployment=deployment.name, fallback=f"model:{fallback.model}"
            )
            return Outcome(
                prediction=answer,
                served=outcome.served,
                deployment=deployment.name,
                inputs=outcome.inputs,
            )
        return Outcome(error=error, served=plan.primary, deployment=deployment.name)

    # --- shadows ----------------------------------------------------------------------------

    def shadow_counts(self, name: str) -> tuple[int, int]:
        """Shadow runs and shadow failures recorded for a deployment in this process."""
        return self._shadows.runs.get(name, 0), self._shadows.failures.get(name, 0)

    def close(self) -> None:
        """Cancel shadow traffic still in flight."""
        for task in list(self._shadows.tasks):
            task.cancel()

    def _shadow(self, name: str, ref: str, request: Predict) -> None:
        tracked = self._shadows

        async def run() -> None:
            try:
                outcome = await self.run_model(await self._resolver.version(ref), request)
            except Exception as exc:
                outcome = Outcome(error=exc)
            answer = outcome.prediction
            if answer is None:  # a shadow never affects the answer
                tracked.failures[name] = tracked.failures.get(name, 0) + 1
                self._log.warning("deployment %s: shadow %s failed: %s", name, ref, outcome.error)
                return
            tracked.runs[name] = tracked.runs.get(name, 0) + 1
            self._log.info(
                "deployment %s: shadow %s:%s answered %s",
                name,
                answer.model,
                answer.version,
                answer.prediction_id,
            )

        task = asyncio.ensure_future(run())
        tracked.tasks.add(task)
        task.add_done_callback(tracked.tasks.discard)


def _arrays(request: Predict, signature: Signature) -> dict[str, np.ndarray[Any, Any]]:
    arrays = {name: tensor.to_numpy() for name, tensor in request.inputs.items()}
    if request.coerce:  # a request decoded from a text format
        for spec in signature.inputs:
            if spec.name in arrays:
                arrays[spec.name] = _coerce(spec.name, arrays[spec.name], spec.dtype)
    return arrays


def _coerce(name: str, array: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    """Convert a number array from a text format to ``dtype`` when every value fits."""
    if dtype == "BYTES" or array.dtype.kind not in "biuf":
        return array
    target = numpy_dtype(dtype)
    if array.dtype == target:
        return array
    if target.kind == "f":
        # A finite number too large for the float type would become infinity: refused, as /v2
        # does. Checked before a narrowing cast, which then cannot overflow (no errstate).
        if _may_overflow(array.dtype, target) and _beyond(array, _FLOAT_MAX[target]):
            raise _out_of_range(name, dtype)
        return array.astype(target)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(target)
    if not np.array_equal(converted, array):
        raise UnprocessableInput(
            f"input {name!r}: values do not fit {dtype} (expected whole numbers in range)",
            details={"input": name, "expected": dtype},
        )
    return converted


_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}


def _may_overflow(source: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """Whether some finite ``source`` value is beyond ``target``'s float range: a narrower
    float, or (float16 only) a whole number above 65,504."""
    if source.kind == "f":
        return source.itemsize > target.itemsize
    return target.itemsize < 4


def _beyond(array: np.ndarray[Any, Any], limit: float) -> bool:
    """Whether ``array`` holds a finite value whose magnitude exceeds ``limit`` (infinities and
    NaN are not beyond: they stay what they are)."""
    if array.size == 0:
        return False
    magnitude = np.abs(array.astype(np.float64, copy=False))
    if not np.fmax.reduce(magnitude, axis=None) > limit:  # the common case (fmax skips NaN)
        return False
    return bool(np.isfinite(magnitude[magnitude > limit]).any())


def _out_of_range(name: str, dtype: str) -> UnprocessableInput:
    return UnprocessableInput(
        f"input {name!r} has values outside the range of {dtype}",
        details={"input": name, "expected": dtype},
    )


def _select(outputs: dict[str, np.ndarray[Any, Any]], wanted: list[str]) -> dict[str, Tensor]:
    if not wanted:
        return {name: Tensor.from_numpy(array) for name, array in outputs.items()}
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise NotFound(
            f"the model has no output {missing[0]!r} (it has {', '.join(outputs)})",
            details={"output": missing[0], "outputs": list(outputs)},
        )
    return {name: Tensor.from_numpy(outputs[name]) for name in wanted}
