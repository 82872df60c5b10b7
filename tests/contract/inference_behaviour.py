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
from onnx import TensorProto, helper, numpy_helper

from contracts.common import Conflict, InvalidInput, NotFound, Tensor, UnprocessableInput
from contracts.inference import (
    BatchJob,
    DeleteDeployment,
    Deployment,
    Fallback,
    FetchBatchResults,
    GetBatchJob,
    GetDeployment,
    GetModelStatus,
    InferenceService,
    ListDeployments,
    LoadModel,
    Predict,
    Prediction,
    PutDeployment,
    Route,
    SubmitBatchJob,
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
        with pytest.raises(NotFound):
            await inference.load_model(LoadModel(model=f"{model}:9", wait=False))
        with pytest.raises(NotFound):
            await inference.model_status(GetModelStatus(model=f"{model}:9"))
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

    # --- deployments ------------------------------------------------------------------------

    @pytest.fixture
    async def broken(self, registry: RegistryService) -> str:
        """A model whose signature matches ``model`` but that fails whenever it runs."""
        name = f"b{uuid.uuid4().hex[:10]}"
        await registry.register_version(RegisterVersion(name=name, artifact=_broken_onnx()))
        return name

    async def test_deployments_are_stored_listed_and_deleted(
        self, inference: InferenceService, model: str
    ) -> None:
        name = _deployment_name()
        spec = Deployment(name=name, routes=[Route(model=f"{model}:1", weight=1)], cache_ttl_s=5)

        put = await inference.put_deployment(PutDeployment(deployment=spec))
        got = await inference.get_deployment(GetDeployment(name=name))
        listed = await _all_deployments(inference)
        deleted = await inference.delete_deployment(DeleteDeployment(name=name))

        assert put.updated_at is not None
        assert got.routes == spec.routes
        assert got.cache_ttl_s == 5
        assert name in listed
        assert deleted.name == name
        with pytest.raises(NotFound):
            await inference.get_deployment(GetDeployment(name=name))
        with pytest.raises(NotFound):
            await inference.delete_deployment(DeleteDeployment(name=name))

    async def test_deployments_are_validated(self, inference: InferenceService, model: str) -> None:
        route = Route(model=f"{model}:1", weight=1)
        with pytest.raises(Conflict):  # models and deployments share one namespace
            await inference.put_deployment(
                PutDeployment(deployment=Deployment(name=model, routes=[route]))
            )
        with pytest.raises(NotFound):
            await inference.put_deployment(
                PutDeployment(
                    deployment=Deployment(
                        name=_deployment_name(), routes=[Route(model=f"{model}:9", weight=1)]
                    )
                )
            )
        invalid = [
            Deployment(name="../x", routes=[route]),
            Deployment(name=_deployment_name(), routes=[]),
            Deployment(name=_deployment_name(), routes=[Route(model=f"{model}:1", weight=0)]),
            Deployment(
                name=_deployment_name(), routes=[route], fallbacks=[Fallback(kind="default")]
            ),
        ]
        for deployment in invalid:
            with pytest.raises(InvalidInput):
                await inference.put_deployment(PutDeployment(deployment=deployment))

    async def test_a_deployment_splits_traffic_by_weight(
        self, inference: InferenceService, model: str
    ) -> None:
        name = await _deploy(inference, model, routes=[(1, 3.0), (2, 1.0)])
        request = Predict(model=name, inputs={"x": Tensor.from_numpy(ROWS)})

        answers = await asyncio.gather(*(inference.predict(request) for _ in range(200)))

        ones = sum(a.version == 1 for a in answers)
        assert 120 <= ones <= 180, ones  # 150 expected; about 5 standard deviations either way
        assert {a.deployment for a in answers} == {name}
        assert not any(a.cached or a.fallback for a in answers)
        for answer in answers:
            seed = answer.version - 1
            np.testing.assert_allclose(answer.outputs["y"].to_numpy(), expected(ROWS, seed), 1e-5)

    async def test_a_sticky_key_always_gets_the_same_version(
        self, inference: InferenceService, model: str
    ) -> None:
        name = await _deploy(inference, model, routes=[(1, 1.0), (2, 1.0)], sticky_header="x-user")
        x = {"x": Tensor.from_numpy(ROWS)}

        same = {
            (await inference.predict(Predict(model=name, inputs=x, sticky_key="alice"))).version
            for _ in range(50)
        }
        spread = {
            (await inference.predict(Predict(model=name, inputs=x, sticky_key=f"u{i}"))).version
            for i in range(40)
        }

        assert len(same) == 1
        assert spread == {1, 2}

    async def test_a_sticky_header_among_the_request_headers_picks_like_its_key(
        self, inference: InferenceService, model: str
    ) -> None:
        name = await _deploy(inference, model, routes=[(1, 1.0), (2, 1.0)], sticky_header="X-User")
        x = {"x": Tensor.from_numpy(ROWS)}

        def by_headers(user: str) -> Predict:
            return Predict(model=name, inputs=x, sticky={"x-user": user, "accept": "*/*"})

        for user in ("alice", "bob", "carol", "dave"):
            keyed = await inference.predict(Predict(model=name, inputs=x, sticky_key=user))
            headed = {(await inference.predict(by_headers(user))).version for _ in range(10)}
            assert headed == {keyed.version}
        spread = {(await inference.predict(by_headers(f"u{i}"))).version for i in range(40)}
        assert spread == {1, 2}

    async def test_a_sticky_input_picks_the_version_from_the_first_row(
        self, inference: InferenceService, model: str
    ) -> None:
        name = await _deploy(inference, model, routes=[(1, 1.0), (2, 1.0)], sticky_input="x")

        def rows(i: int) -> dict[str, Tensor]:
            return {"x": Tensor.from_numpy(np.full((2, 3), i, dtype=np.float32))}

        same = {
            (await inference.predict(Predict(model=name, inputs=rows(7)))).version
            for _ in range(50)
        }
        spread = {
            (await inference.predict(Predict(model=name, inputs=rows(i)))).version
            for i in range(40)
        }

        assert len(same) == 1
        assert spread == {1, 2}

    async def test_a_failing_primary_falls_back_to_another_model(
        self, inference: InferenceService, model: str, broken: str
    ) -> None:
        name = _deployment_name()
        await inference.put_deployment(
            PutDeployment(
                deployment=Deployment(
                    name=name,
                    routes=[Route(model=f"{broken}:1", weight=1)],
                    fallbacks=[Fallback(kind="model", model=f"{model}:1")],
                )
            )
        )

        answer = await inference.predict(Predict(model=name, inputs={"x": Tensor.from_numpy(ROWS)}))

        assert (answer.model, answer.version) == (model, 1)
        assert answer.fallback == f"model:{model}:1"
        assert answer.deployment == name
        np.testing.assert_allclose(answer.outputs["y"].to_numpy(), expected(ROWS), rtol=1e-5)

    async def test_a_default_answer_is_the_last_fallback(
        self, inference: InferenceService, broken: str
    ) -> None:
        name = _deployment_name()
        default = np.zeros((1, 2), dtype=np.float32)
        await inference.put_deployment(
            PutDeployment(
                deployment=Deployment(
                    name=name,
                    routes=[Route(model=f"{broken}:1", weight=1)],
                    fallbacks=[
                        Fallback(kind="model", model=f"{broken}:1"),
                        Fallback(kind="default", outputs={"y": Tensor.from_numpy(default)}),
                    ],
                )
            )
        )

        answer = await inference.predict(Predict(model=name, inputs={"x": Tensor.from_numpy(ROWS)}))

        assert answer.fallback == "default"
        assert answer.deployment == name
        np.testing.assert_array_equal(answer.outputs["y"].to_numpy(), default)

    async def test_input_errors_are_not_hidden_by_fallbacks(
        self, inference: InferenceService, model: str
    ) -> None:
        default = {"y": Tensor.from_numpy(np.zeros((1, 2), dtype=np.float32))}
        name = await _deploy(
            inference,
            model,
            routes=[(1, 1.0)],
            fallbacks=[Fallback(kind="default", outputs=default)],
        )
        with pytest.raises(UnprocessableInput):
            await inference.predict(Predict(model=name, inputs={"z": Tensor.from_numpy(ROWS)}))

    async def test_shadows_never_change_the_answer(
        self, inference: InferenceService, model: str, broken: str
    ) -> None:
        name = await _deploy(
            inference, model, routes=[(1, 1.0)], shadows=[f"{model}:2", f"{broken}:1"]
        )

        answers = [
            await inference.predict(Predict(model=name, inputs={"x": Tensor.from_numpy(ROWS)}))
            for _ in range(5)
        ]

        for answer in answers:
            assert (answer.model, answer.version, answer.fallback) == (model, 1, None)
            np.testing.assert_allclose(answer.outputs["y"].to_numpy(), expected(ROWS), rtol=1e-5)

    async def test_the_response_cache_answers_repeats_and_marks_them(
        self, inference: InferenceService, model: str
    ) -> None:
        name = await _deploy(inference, model, routes=[(2, 1.0)], cache_ttl_s=60)
        x = {"x": Tensor.from_numpy(ROWS)}

        first = await inference.predict(Predict(model=name, inputs=x))
        second = await inference.predict(Predict(model=name, inputs=x))
        other = await inference.predict(
            Predict(model=name, inputs={"x": Tensor.from_numpy(ROWS + 1)})
        )

        assert (first.cached, second.cached, other.cached) == (False, True, False)
        assert second.version == first.version == 2
        assert second.deployment == name
        assert second.prediction_id != first.prediction_id
        np.testing.assert_array_equal(second.outputs["y"].to_numpy(), first.outputs["y"].to_numpy())

    async def test_a_deployment_name_wins_over_nothing_and_model_refs_still_work(
        self, inference: InferenceService, model: str
    ) -> None:
        name = await _deploy(inference, model, routes=[(1, 1.0)])
        x = {"x": Tensor.from_numpy(ROWS)}
        by_deployment = await inference.predict(Predict(model=name, inputs=x))
        by_model = await inference.predict(Predict(model=model, inputs=x))

        assert (by_deployment.version, by_deployment.deployment) == (1, name)
        assert (by_model.version, by_model.deployment) == (2, None)

    # --- batch jobs -------------------------------------------------------------------------

    async def test_a_batch_job_runs_every_row_in_chunks(
        self, inference: InferenceService, model: str
    ) -> None:
        rows = np.random.default_rng(7).normal(size=(23, 3)).astype(np.float32)
        submitted = await inference.submit_batch_job(
            SubmitBatchJob(model=f"{model}:1", inputs={"x": Tensor.from_numpy(rows)}, chunk_rows=5)
        )
        assert (submitted.status, submitted.rows, submitted.rows_done) == ("queued", 23, 0)

        job = await _finished(inference, submitted.id)

        assert (job.status, job.rows_done, job.version, job.error) == ("succeeded", 23, 1, None)
        chunks = [c async for c in inference.fetch_batch_results(FetchBatchResults(id=job.id))]
        assert [c.offset for c in chunks] == [0, 5, 10, 15, 20]
        outputs = np.concatenate([c.outputs["y"].to_numpy() for c in chunks])
        direct = await inference.predict(
            Predict(model=f"{model}:1", inputs={"x": Tensor.from_numpy(rows)})
        )
        np.testing.assert_allclose(outputs, direct.outputs["y"].to_numpy(), rtol=1e-5)

    async def test_unknown_batch_jobs_and_models_are_not_found(
        self, inference: InferenceService, model: str
    ) -> None:
        with pytest.raises(NotFound):
            await inference.get_batch_job(GetBatchJob(id=uuid.uuid4().hex))
        with pytest.raises(NotFound):
            [c async for c in inference.fetch_batch_results(FetchBatchResults(id="nope"))]
        x = {"x": Tensor.from_numpy(ROWS)}
        with pytest.raises(NotFound):  # documented: an unknown model is refused at submission
            await inference.submit_batch_job(SubmitBatchJob(model=f"{model}:9", inputs=x))
        with pytest.raises(InvalidInput):
            await inference.submit_batch_job(
                SubmitBatchJob(model=f"{model}:1", inputs=x, chunk_rows=0)
            )

    async def test_a_batch_job_the_model_refuses_fails_with_the_reason(
        self, inference: InferenceService, model: str
    ) -> None:
        wrong = {"x": Tensor.from_numpy(np.zeros((4, 5), dtype=np.float32))}
        submitted = await inference.submit_batch_job(
            SubmitBatchJob(model=f"{model}:1", inputs=wrong)
        )

        job = await _finished(inference, submitted.id)

        assert job.status == "failed"
        assert job.error is not None
        assert "x" in job.error
        with pytest.raises(Conflict):
            [c async for c in inference.fetch_batch_results(FetchBatchResults(id=job.id))]


async def _finished(inference: InferenceService, job_id: str) -> BatchJob:
    """Poll a batch job (bounded) until it has its outcome."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        job = await inference.get_batch_job(GetBatchJob(id=job_id))
        assert 0 <= job.rows_done <= job.rows
        if job.status in {"succeeded", "failed"} or loop.time() > deadline:
            assert job.status in {"succeeded", "failed"}
            return job
        await asyncio.sleep(0.05)


def _deployment_name() -> str:
    return f"d{uuid.uuid4().hex[:10]}"


async def _deploy(
    inference: InferenceService, model: str, *, routes: list[tuple[int, float]], **options: object
) -> str:
    name = _deployment_name()
    deployment = Deployment(
        name=name,
        routes=[Route(model=f"{model}:{v}", weight=w) for v, w in routes],
        **options,  # type: ignore[arg-type]
    )
    await inference.put_deployment(PutDeployment(deployment=deployment))
    return name


async def _all_deployments(inference: InferenceService) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        page = await inference.list_deployments(ListDeployments(limit=2, cursor=cursor))
        names += [d.name for d in page.items]
        if page.next_cursor is None:
            return names
        cursor = page.next_cursor


def _broken_onnx() -> bytes:
    """``x`` FP32 ``[batch, 3]`` -> ``y`` FP32 ``[batch, 2]`` that fails at run time (a reshape)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(np.array([7, 5], dtype=np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


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
