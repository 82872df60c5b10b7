"""Behaviour every :class:`contracts.inference.InferenceService` shows, whatever the transport.

Subclass :class:`InferenceBehaviour` where fixtures ``inference`` and ``registry`` give the
inference contract and the registry it serves from (names are per test, so one server may serve
many tests).
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from contracts.common import InvalidInput, NotFound, Tensor, UnprocessableInput
from contracts.inference import (
    GetModelStatus,
    InferenceService,
    LoadModel,
    Predict,
    Prediction,
    UnloadModel,
)
from contracts.registry import RegisterVersion, RegistryService, SetAlias
from tests.fakes.models import linear_onnx, linear_weights

__all__ = ["InferenceBehaviour"]

ROWS = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)


def expected(x: np.ndarray, seed: int = 0) -> np.ndarray:
    weight, bias = linear_weights(seed=seed)
    return x @ weight + bias


class InferenceBehaviour:
    """The inference contract's behaviour; needs ``inference`` and ``registry`` fixtures."""

    @pytest.fixture
    async def model(self, registry: RegistryService) -> str:
        name = f"m{uuid.uuid4().hex[:10]}"
        for seed in (0, 1):
            await registry.register_version(
                RegisterVersion(name=name, artifact=linear_onnx(seed=seed))
            )
        return name

    async def test_predicts_what_the_model_computes(
        self, inference: InferenceService, model: str
    ) -> None:
        answer = await inference.predict(
            Predict(model=f"{model}:1", inputs={"x": Tensor.from_numpy(ROWS)})
        )

        assert (answer.model, answer.version) == (model, 1)
        np.testing.assert_allclose(answer.outputs["y"].to_numpy(), expected(ROWS), rtol=1e-5)
        assert len(answer.prediction_id) >= 16

    async def test_references_resolve_alias_then_champion_then_highest(
        self, inference: InferenceService, registry: RegistryService, model: str
    ) -> None:
        x = {"x": Tensor.from_numpy(ROWS)}
        assert (await inference.predict(Predict(model=model, inputs=x))).version == 2
        await registry.set_alias(SetAlias(name=model, alias="champion", version=1))
        await registry.set_alias(SetAlias(name=model, alias="canary", version=2))

        by_alias = await inference.predict(Predict(model=f"{model}@canary", inputs=x))
        by_name = await _eventually_version(inference, Predict(model=model, inputs=x), 1)

        assert by_alias.version == 2
        assert by_name.version == 1
        np.testing.assert_allclose(by_name.outputs["y"].to_numpy(), expected(ROWS, 0), rtol=1e-5)

    async def test_an_alias_move_switches_traffic_to_the_new_version(
        self, inference: InferenceService, registry: RegistryService, model: str
    ) -> None:
        request = Predict(model=f"{model}@prod", inputs={"x": Tensor.from_numpy(ROWS)})
        await registry.set_alias(SetAlias(name=model, alias="prod", version=1))
        assert (await inference.predict(request)).version == 1

        await registry.set_alias(SetAlias(name=model, alias="prod", version=2))

        moved = await _eventually_version(inference, request, 2)
        np.testing.assert_allclose(moved.outputs["y"].to_numpy(), expected(ROWS, 1), rtol=1e-5)

    async def test_missing_inputs_wrong_dtypes_and_shapes_are_unprocessable(
        self, inference: InferenceService, model: str
    ) -> None:
        ref = f"{model}:1"
        cases = {
            "x": {"z": Tensor.from_numpy(ROWS)},
            "float64": {"x": Tensor.from_numpy(ROWS.astype(np.float64))},
            "shape": {"x": Tensor.from_numpy(np.zeros((2, 4), dtype=np.float32))},
        }
        for needle, inputs in cases.items():
            with pytest.raises(UnprocessableInput, match=needle):
                await inference.predict(Predict(model=ref, inputs=inputs))

    async def test_text_format_numbers_are_coerced_and_extras_dropped(
        self, inference: InferenceService, model: str
    ) -> None:
        inputs = {
            "x": Tensor.from_numpy(ROWS.astype(np.float64)),
            "unused": Tensor.from_numpy(np.ones(3)),
        }
        answer = await inference.predict(Predict(model=f"{model}:1", inputs=inputs, coerce=True))
        np.testing.assert_allclose(answer.outputs["y"].to_numpy(), expected(ROWS), rtol=1e-5)

    async def test_unknown_models_versions_and_outputs_are_not_found(
        self, inference: InferenceService, model: str
    ) -> None:
        x = {"x": Tensor.from_numpy(ROWS)}
        for ref in ("nosuchmodel", f"{model}:9", f"{model}@nosuchalias"):
            with pytest.raises(NotFound):
                await inference.predict(Predict(model=ref, inputs=x))
        with pytest.raises(NotFound, match="logits"):
            await inference.predict(Predict(model=f"{model}:1", inputs=x, outputs=["logits"]))
        with pytest.raises(InvalidInput):
            await inference.predict(Predict(model="../etc", inputs=x))

    async def test_load_status_and_unload(self, inference: InferenceService, model: str) -> None:
        ref = f"{model}:2"
        before = await inference.model_status(GetModelStatus(model=ref))
        loaded = await inference.load_model(LoadModel(model=ref))
        after = await inference.unload_model(UnloadModel(model=ref))

        assert before.state == "unloaded"
        assert loaded.state == "ready"
        assert "CPUExecutionProvider" in loaded.providers
        assert [(s.name, s.dtype, s.shape) for s in loaded.inputs] == [("x", "FP32", [-1, 3])]
        assert after.state == "unloaded"

    async def test_concurrent_predictions_each_get_their_own_rows(
        self, inference: InferenceService, model: str
    ) -> None:
        rows = [np.full((1, 3), i, dtype=np.float32) for i in range(40)]
        answers = await asyncio.gather(
            *(
                inference.predict(Predict(model=f"{model}:1", inputs={"x": Tensor.from_numpy(r)}))
                for r in rows
            )
        )
        for row, answer in zip(rows, answers, strict=True):
            np.testing.assert_allclose(answer.outputs["y"].to_numpy(), expected(row), rtol=1e-5)


async def _eventually_version(
    inference: InferenceService, request: Predict, version: int
) -> Prediction:
    """Alias moves reach inference as events: wait (bounded) for the switch."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        answer = await inference.predict(request)
        if answer.version == version or loop.time() > deadline:
            assert answer.version == version
            return answer
        await asyncio.sleep(0.05)
